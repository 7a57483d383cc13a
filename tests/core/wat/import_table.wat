;; table import
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (import "env" "table" (table 1 funcref))
  (func (export "run")
    nop))
