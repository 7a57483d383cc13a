;; memory must be defined in-module
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func (export "run")
    nop))
