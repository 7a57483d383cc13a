;; global import
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (import "env" "g" (global i32))
  (func (export "run")
    nop))
