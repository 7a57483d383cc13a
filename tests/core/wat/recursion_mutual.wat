;; run -> f, f -> g, g -> f
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (call $f))
  (func $f (call $g))
  (func $g (call $f)))
