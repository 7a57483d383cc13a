;; branches to an enclosing block build a CFG
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (block (br_if 0 (i32.const 1)) (br 0))))
