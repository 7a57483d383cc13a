;; table.copy
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (table 1 funcref)
  (elem $e func)
  (func (export "run")
    (table.copy (i32.const 0) (i32.const 0) (i32.const 0))))
