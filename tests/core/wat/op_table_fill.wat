;; table.fill
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (table 1 funcref)
  (elem $e func)
  (func (export "run")
    (table.fill (i32.const 0) (ref.null func) (i32.const 0))))
