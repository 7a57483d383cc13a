;; four ifs: complexity 5
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (if (i32.const 1) (then nop))
    (if (i32.const 1) (then nop))
    (if (i32.const 1) (then nop))
    (if (i32.const 1) (then nop))))
