;; a canonical bounded loop plus floats: fails CLAIM_V1, passes the heavy lane
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
      local.set $i
      local.get $i
      i32.const 3
      i32.lt_u
      br_if 0
    end
    (drop (f32.add (f32.const 1) (f32.const 2)))))
