;; gzip magic split across an active and a passive segment (segments are concatenated)
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "xx\1f")
  (data "\8bxx")
  (func (export "run")
    nop))
