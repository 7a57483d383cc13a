-- 0003: revocations, the taint they spread and the signed revocation feed (spec 40 §5,
-- spec 20 §3.16-3.18, DESIGN §3). A RevokeClaim commits its log leaf, its `revocations` row,
-- the claim states (REVOKED, descendants TAINTED) and its feed entries in one transaction.
-- Both tables are append-only: the feed a client verified stays a prefix of every later feed.

-- One row per RevokeClaim; the row's leaf is the `kind: "revocation"` log entry.
CREATE TABLE revocations (
  leaf_index     INTEGER PRIMARY KEY REFERENCES log_leaves(leaf_index),
  claim_id       BLOB    NOT NULL REFERENCES claims(claim_id),
  capsule_hash   BLOB    NOT NULL CHECK (length(capsule_hash) = 32),
  reason         TEXT    NOT NULL,
  timestamp_unix INTEGER NOT NULL CHECK (timestamp_unix >= 0),
  principal_id   TEXT    NOT NULL,
  recorded_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_capsule_idx ON revocations(capsule_hash);
CREATE INDEX revocations_claim_idx ON revocations(claim_id);
CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
  BEGIN SELECT RAISE(ABORT, 'revocations is append-only'); END;
CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
  BEGIN SELECT RAISE(ABORT, 'revocations is append-only'); END;

-- The feed, in order: per revocation first the revoked capsule, then every descendant capsule it
-- tainted (breadth-first over capsule_edges). feed_seq is dense from 1. On the wire an entry's
-- `claim_id` slot carries `capsule_hash` (spec 20 §7.6).
CREATE TABLE revocation_feed_entries (
  feed_seq              INTEGER PRIMARY KEY CHECK (feed_seq >= 1),
  revocation_leaf_index INTEGER NOT NULL REFERENCES revocations(leaf_index),
  entry_kind            TEXT    NOT NULL CHECK (entry_kind IN ('revoked', 'tainted')),
  claim_id              BLOB    NOT NULL REFERENCES claims(claim_id),
  capsule_hash          BLOB    NOT NULL CHECK (length(capsule_hash) = 32),
  timestamp_unix        INTEGER NOT NULL CHECK (timestamp_unix >= 0),
  reason                TEXT    NOT NULL
) STRICT;
CREATE INDEX revocation_feed_entries_leaf_idx
  ON revocation_feed_entries(revocation_leaf_index);
CREATE INDEX revocation_feed_entries_claim_idx ON revocation_feed_entries(claim_id);
CREATE TRIGGER revocation_feed_entries_dense BEFORE INSERT ON revocation_feed_entries
  WHEN NEW.feed_seq <> (SELECT ifnull(max(feed_seq), 0) + 1 FROM revocation_feed_entries)
  BEGIN SELECT RAISE(ABORT, 'revocation_feed_entries: feed_seq must be the next number'); END;
CREATE TRIGGER revocation_feed_entries_no_update BEFORE UPDATE ON revocation_feed_entries
  BEGIN SELECT RAISE(ABORT, 'revocation_feed_entries is append-only'); END;
CREATE TRIGGER revocation_feed_entries_no_delete BEFORE DELETE ON revocation_feed_entries
  BEGIN SELECT RAISE(ABORT, 'revocation_feed_entries is append-only'); END;

CREATE VIEW revocation_feed AS
  SELECT f.feed_seq, f.entry_kind, lower(hex(f.capsule_hash)) AS capsule_hash_hex,
         lower(hex(f.claim_id)) AS claim_id_hex, f.timestamp_unix, f.reason,
         f.revocation_leaf_index
  FROM revocation_feed_entries f ORDER BY f.feed_seq;
