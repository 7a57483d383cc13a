;; QUIRK: br_if targeting the function level fails CFG construction
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (br_if 0 (i32.const 1))))
