;; QUIRK: the outer loop's scan finds the inner loop's pattern, whose init is inside
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (func (export "run")
    (local $i i32)
    (local $j i32)
    i32.const 0
    local.set $i
    loop
      i32.const 0
      local.set $j
      loop
        (if (i32.eqz (local.get $j)) (then nop))
        local.get $j
        i32.const 1
        i32.add
        local.set $j
        local.get $j
        i32.const 2
        i32.lt_u
        br_if 0
      end
      local.get $i
      i32.const 1
      i32.add
      local.set $i
      local.get $i
      i32.const 2
      i32.lt_u
      br_if 0
    end))
