;; memory.grow
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (func (export "run")
    (drop (memory.grow (i32.const 1)))))
