;; dp syscall without the dp_lane feature
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (import "env" "dp_laplace_i64" (func (param i64 i64 i64) (result i64)))
  (func (export "run")
    nop))
