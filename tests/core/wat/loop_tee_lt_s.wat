;; local.tee + i32.lt_s variant of the canonical pattern
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (local $i i32)
    i32.const 0
    local.set $i
    loop
      local.get $i
      i32.const 1
      i32.add
      local.tee $i
      local.get $i
      i32.const 7
      i32.lt_s
      br_if 0
      drop
    end))
