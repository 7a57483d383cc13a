;; smallest accepted claim guest (spec 30 §11 scenario 28)
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    nop))
