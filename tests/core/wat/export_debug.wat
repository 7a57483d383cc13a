;; an export besides run and memory
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    nop)
  (func (export "debug") nop))
