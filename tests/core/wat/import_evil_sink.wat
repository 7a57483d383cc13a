;; import outside the ABI
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (import "evil" "sink" (func))
  (func (export "run")
    nop))
