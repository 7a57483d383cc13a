;; legacy exceptions: try/catch
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (tag $x)
  (func (export "run")
    try
      nop
    catch $x
    end))
