;; bound read from a local: rejected
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (local $i i32)
    (local $b i32)
    i32.const 0
    local.set $i
    i32.const 3
    local.set $b
    loop
      local.get $i
      i32.const 1
      i32.add
      local.set $i
      local.get $i
      local.get $b
      i32.lt_u
      br_if 0
    end))
