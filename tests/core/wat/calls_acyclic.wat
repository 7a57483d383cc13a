;; run -> f -> g: no recursion
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (call $f)
    (call $g))
  (func $f (call $g))
  (func $g nop))
