-- 0001: the transparency log (DESIGN §4, spec 40 §8.3) and the meta table.
-- Hashes are BLOBs; views give lowercase hex for people using plain sqlite3.

CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;

-- One row per log entry. Append-only: the triggers below refuse gaps, updates and deletes.
CREATE TABLE log_leaves (
  leaf_index     INTEGER PRIMARY KEY CHECK (leaf_index >= 0),
  kind           TEXT    NOT NULL,
  payload        BLOB    NOT NULL,                                    -- exact entry bytes (RFC 8785 JSON)
  leaf_hash      BLOB    NOT NULL CHECK (length(leaf_hash) = 32),      -- SHA-256(0x00 || payload)
  payload_sha256 BLOB    NOT NULL CHECK (length(payload_sha256) = 32), -- SHA-256(payload), e.g. capsule_hash
  appended_at_ms INTEGER NOT NULL
) STRICT;

CREATE TRIGGER log_leaves_dense BEFORE INSERT ON log_leaves
  WHEN NEW.leaf_index <> (SELECT ifnull(max(leaf_index) + 1, 0) FROM log_leaves)
  BEGIN SELECT RAISE(ABORT, 'log_leaves: leaf_index must equal the tree size'); END;
CREATE TRIGGER log_leaves_no_update BEFORE UPDATE ON log_leaves
  BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;
CREATE TRIGGER log_leaves_no_delete BEFORE DELETE ON log_leaves
  BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;

-- Every completed perfect subtree above the leaves: node (level, node_index) covers leaves
-- [node_index * 2^level, (node_index + 1) * 2^level). Level 0 is log_leaves.leaf_hash.
CREATE TABLE merkle_nodes (
  level      INTEGER NOT NULL CHECK (level BETWEEN 1 AND 63),
  node_index INTEGER NOT NULL CHECK (node_index >= 0),
  hash       BLOB    NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (level, node_index)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
  BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
  BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;

-- Public metadata of the ETL signing keys (seeds stay in keys/, never here).
CREATE TABLE signing_keys (
  key_id           BLOB PRIMARY KEY CHECK (length(key_id) = 32),
  public_key       BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
  first_seen_at_ms INTEGER NOT NULL
) STRICT;

-- Every signed tree head the daemon has produced; only stored heads are ever handed out, so the
-- consistency between any two heads a client holds can be proven later.
CREATE TABLE signed_tree_heads (
  head_id      INTEGER PRIMARY KEY,
  tree_size    INTEGER NOT NULL CHECK (tree_size >= 0),
  root_hash    BLOB    NOT NULL CHECK (length(root_hash) = 32),
  key_id       BLOB    NOT NULL REFERENCES signing_keys(key_id),
  signature    BLOB    NOT NULL CHECK (length(signature) = 64),
  signed_at_ms INTEGER NOT NULL,
  UNIQUE (tree_size, key_id)
) STRICT;
CREATE TRIGGER signed_tree_heads_no_update BEFORE UPDATE ON signed_tree_heads
  BEGIN SELECT RAISE(ABORT, 'signed_tree_heads is append-only'); END;
CREATE TRIGGER signed_tree_heads_no_delete BEFORE DELETE ON signed_tree_heads
  BEGIN SELECT RAISE(ABORT, 'signed_tree_heads is append-only'); END;

CREATE VIEW log_records AS
  SELECT leaf_index, kind, length(payload) AS len, lower(hex(leaf_hash)) AS leaf_hash_hex,
         lower(hex(payload_sha256)) AS payload_sha256_hex, CAST(payload AS TEXT) AS payload_text,
         appended_at_ms
  FROM log_leaves;

CREATE VIEW tree_heads AS
  SELECT h.head_id, h.tree_size, lower(hex(h.root_hash)) AS root_hash_hex,
         lower(hex(h.key_id)) AS key_id_hex, lower(hex(h.signature)) AS signature_hex,
         h.signed_at_ms
  FROM signed_tree_heads h;
