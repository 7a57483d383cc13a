;; CLAIM_V1 requires an emit_structured_claim import
(module (func (export "run") nop))
