;; claim profile module: emit import, run, memory
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    nop))
