;; QUIRK: float loads/stores/locals and trunc_sat are not in the ban list
(module
  (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory 1)
  (func (export "run")
    (local $x f64)
    (f32.store (i32.const 0) (f32.load (i32.const 4)))
    (local.set $x (f64.load (i32.const 8)))
    (f64.store (i32.const 8) (local.get $x))
    (drop (i32.trunc_sat_f32_s (f32.load (i32.const 0))))
    (drop (i64.trunc_sat_f64_u (f64.load (i32.const 0))))))
