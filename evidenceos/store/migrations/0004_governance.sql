-- 0004: signed operator governance (spec 50; DESIGN §1, §2, §6, §7).
-- Every signed change is one row of governance_events, hash-chained to its predecessor and
-- appended to the log as a `governance` leaf in the same transaction. Tools stage oracle
-- records, epoch control and NullSpec activations here; the daemon validates and applies them
-- at start-up and on SIGHUP. Trusted keys are operator input files, never rows.

CREATE TABLE governance_events (
  seq               INTEGER PRIMARY KEY CHECK (seq >= 0),             -- chain position, dense
  event_id          BLOB    NOT NULL CHECK (length(event_id) = 32),   -- SHA-256(signed bytes)
  event_type        TEXT    NOT NULL,
  epoch             INTEGER NOT NULL CHECK (epoch >= 0),              -- Unix seconds (spec 50 §1.5)
  key_id            TEXT    NOT NULL,                                 -- '' = unsigned (dev only)
  payload_json      TEXT    NOT NULL CHECK (json_valid(payload_json)),
  signature_ed25519 TEXT    NOT NULL,                                 -- lowercase hex, '' = unsigned
  prev_event_hash   BLOB    NOT NULL CHECK (length(prev_event_hash) = 32),
  event_hash        BLOB    NOT NULL UNIQUE CHECK (length(event_hash) = 32),
  leaf_index        INTEGER NOT NULL UNIQUE REFERENCES log_leaves(leaf_index),
  recorded_at_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX governance_events_event_id_idx ON governance_events(event_id);

CREATE TRIGGER governance_events_dense BEFORE INSERT ON governance_events
  WHEN NEW.seq <> (SELECT ifnull(max(seq) + 1, 0) FROM governance_events)
  BEGIN SELECT RAISE(ABORT, 'governance_events: seq must equal the chain length'); END;
CREATE TRIGGER governance_events_no_update BEFORE UPDATE ON governance_events
  BEGIN SELECT RAISE(ABORT, 'governance_events is append-only'); END;
CREATE TRIGGER governance_events_no_delete BEFORE DELETE ON governance_events
  BEGIN SELECT RAISE(ABORT, 'governance_events is append-only'); END;

-- Finds the governance leaves of the log (chain checks) without scanning every leaf.
CREATE INDEX log_leaves_kind_idx ON log_leaves(kind, leaf_index);

-- Signed oracle operator records (spec 50 §3.2). 'staged' rows are written by the tools,
-- 'applied' rows are what the daemon validated and put in effect at its last start or SIGHUP.
CREATE TABLE oracle_operator_records (
  oracle_id     TEXT    NOT NULL,
  stage         TEXT    NOT NULL CHECK (stage IN ('staged', 'applied')),
  record_json   TEXT    NOT NULL CHECK (json_valid(record_json)),     -- record body, spec 50 §3.2
  event_seq     INTEGER NOT NULL REFERENCES governance_events(seq),
  updated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (oracle_id, stage)
) STRICT, WITHOUT ROWID;

-- Signed epoch control (spec 50 §3.3): at most one staged and one applied record. The applied
-- forced epoch is also mirrored into meta.forced_epoch, which the claim path reads.
CREATE TABLE epoch_controls (
  stage         TEXT    PRIMARY KEY CHECK (stage IN ('staged', 'applied')),
  control_json  TEXT    NOT NULL CHECK (json_valid(control_json)),
  event_seq     INTEGER NOT NULL REFERENCES governance_events(seq),
  updated_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- NullSpec activations waiting for the next start-up or SIGHUP; applying one upserts
-- nullspec_activations (0002), which the execution path reads.
CREATE TABLE nullspec_activations_staged (
  oracle_id     TEXT    NOT NULL,
  holdout_ref   TEXT    NOT NULL,
  nullspec_id   BLOB    NOT NULL REFERENCES nullspecs(nullspec_id),
  event_seq     INTEGER NOT NULL REFERENCES governance_events(seq),
  staged_at_ms  INTEGER NOT NULL,
  PRIMARY KEY (oracle_id, holdout_ref)
) STRICT, WITHOUT ROWID;

CREATE VIEW governance_log AS
  SELECT seq, lower(hex(event_id)) AS event_id_hex, event_type, epoch, key_id, payload_json,
         signature_ed25519, lower(hex(prev_event_hash)) AS prev_event_hash_hex,
         lower(hex(event_hash)) AS event_hash_hex, leaf_index, recorded_at_ms
  FROM governance_events;
