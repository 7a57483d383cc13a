;; kolmogorov proxy 10 * log2(10) + 2 = 35.219
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "ABCDEFGHIJ")
  (func (export "run")
    nop))
