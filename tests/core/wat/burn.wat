;; spec 30 §5.5: the PLN burn module (38 bytes); loops are banned in HighAssurance
(module (func (export "run") (loop (br 0))))
