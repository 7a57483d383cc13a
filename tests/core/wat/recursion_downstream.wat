;; run -> f, f -> f, f -> g: g is downstream of a cycle
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (call $f))
  (func $f (call $f) (call $g))
  (func $g nop))
