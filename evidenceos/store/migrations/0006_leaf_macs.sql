-- 0006: a MAC on every new leaf, so leaves not yet covered by a signed tree head (at most 255
-- after a crash, decision D-F2) can be told from rows inserted by someone without the signing
-- key (decision D-F3). NULL on leaves appended before this migration: every one of those is
-- covered by a signed head.
ALTER TABLE log_leaves ADD COLUMN tail_mac BLOB CHECK (tail_mac IS NULL OR length(tail_mac) = 32);
