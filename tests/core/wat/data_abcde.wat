;; 5 data bytes
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "ABCDE")
  (func (export "run")
    nop))
