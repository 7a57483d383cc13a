;; indirect tail call
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (type $t (func))
  (table 1 funcref)
  (func (export "run")
    (return_call_indirect (type $t) (i32.const 0))))
