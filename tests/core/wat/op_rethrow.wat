;; legacy exceptions: catch_all/rethrow
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (tag $x)
  (func (export "run")
    try
      nop
    catch_all
      rethrow 0
    end))
