;; counter step +2: rejected
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (local $i i32)
    i32.const 0
    local.set $i
    loop
      local.get $i
      i32.const 2
      i32.add
      local.set $i
      local.get $i
      i32.const 8
      i32.lt_u
      br_if 0
    end))
