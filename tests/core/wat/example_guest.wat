;; spec 30 §12: the minimal example guest (passes CLAIM_V1, 10 operators, proxy 2, fast lane)
(module
  ;; host imports: canonical ABI v2 names and signatures
  (import "env" "oracle_query"          (func $oq   (param i32 i32) (result i32)))
  (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  ;; one 64 KiB page, exported so the host can read it
  (memory (export "memory") 1)
  ;; four predictions, one byte per holdout row
  (data (i32.const 0) "\01\01\01\01")
  (func (export "run")
    ;; store8 address first, then the value returned by the oracle
    i32.const 16
    i32.const 0 i32.const 4 call $oq      ;; bucket = quantise(accuracy)
    i32.store8
    ;; emit the single canonical symbol byte at offset 16
    i32.const 16 i32.const 1 call $emit
    drop))
