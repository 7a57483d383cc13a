;; f64 arithmetic
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (drop (f64.add (f64.const 1) (f64.const 2)))))
