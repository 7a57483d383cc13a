;; table.grow
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (table 1 funcref)
  (elem $e func)
  (func (export "run")
    (drop (table.grow (ref.null func) (i32.const 1)))))
