;; 1 data byte
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "a")
  (func (export "run")
    nop))
