-- 0002: claims, their artifacts and executions, budget pools, accounts, idempotency records.
-- One module of evidenceos/store owns each table; JSON columns hold pure-core values serialised
-- with their to_json (ledger, pools, pins), so sqlite3 can still read them with json_extract.

CREATE TABLE wasm_modules (                         -- content-addressed guest modules
  module_sha256 BLOB PRIMARY KEY CHECK (length(module_sha256) = 32),
  module        BLOB NOT NULL,
  first_seen_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE compiled_modules (                     -- wasmtime artefacts, one compile per module
  module_sha256      BLOB NOT NULL REFERENCES wasm_modules(module_sha256),
  engine_fingerprint TEXT NOT NULL,
  artefact           BLOB NOT NULL,
  compiled_at_ms     INTEGER NOT NULL,
  PRIMARY KEY (module_sha256, engine_fingerprint)
) STRICT, WITHOUT ROWID;

CREATE TABLE claims (
  claim_id           BLOB PRIMARY KEY CHECK (length(claim_id) = 32),
  owner_principal_id TEXT NOT NULL,
  claim_name         TEXT NOT NULL,
  topic_id           BLOB NOT NULL CHECK (length(topic_id) = 32),
  holdout_ref        TEXT NOT NULL,
  holdout_handle     BLOB NOT NULL CHECK (length(holdout_handle) = 32),
  oracle_id          TEXT NOT NULL,
  lane               TEXT NOT NULL CHECK (lane IN ('fast', 'heavy', 'canary')),
  output_schema_id   TEXT NOT NULL,
  state              TEXT NOT NULL CHECK (state IN ('UNCOMMITTED', 'COMMITTED', 'SEALED',
                       'EXECUTING', 'SETTLED', 'CERTIFIED', 'REVOKED', 'TAINTED', 'STALE', 'FROZEN')),
  wasm_sha256        BLOB REFERENCES wasm_modules(module_sha256),
  last_decision      INTEGER,
  last_capsule_hash  BLOB CHECK (last_capsule_hash IS NULL OR length(last_capsule_hash) = 32),
  etl_index          INTEGER REFERENCES log_leaves(leaf_index),
  record_json        TEXT NOT NULL CHECK (json_valid(record_json)),   -- metadata, ledger, pins ...
  created_at_ms      INTEGER NOT NULL,
  updated_at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX claims_topic_idx ON claims(topic_id);
CREATE INDEX claims_owner_idx ON claims(owner_principal_id);
CREATE INDEX claims_capsule_idx ON claims(last_capsule_hash);
CREATE INDEX claims_state_idx ON claims(state);

CREATE TABLE claim_artifacts (                      -- CommitArtifacts, in request order
  claim_id      BLOB NOT NULL REFERENCES claims(claim_id),
  position      INTEGER NOT NULL,
  kind          TEXT NOT NULL,
  artifact_hash BLOB NOT NULL CHECK (length(artifact_hash) = 32),
  PRIMARY KEY (claim_id, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE capsules (                             -- one row per capsule leaf
  leaf_index    INTEGER PRIMARY KEY REFERENCES log_leaves(leaf_index),
  capsule_hash  BLOB NOT NULL UNIQUE CHECK (length(capsule_hash) = 32),
  claim_id      BLOB NOT NULL REFERENCES claims(claim_id),
  topic_id      BLOB NOT NULL,
  holdout_ref   TEXT NOT NULL,
  oracle_id     TEXT NOT NULL,
  lane          TEXT NOT NULL,
  decision      INTEGER NOT NULL,
  certified     INTEGER NOT NULL CHECK (certified IN (0, 1)),
  e_value       REAL NOT NULL,
  k_bits_total  REAL NOT NULL,
  epoch         INTEGER NOT NULL,
  owner_principal_id TEXT NOT NULL
) STRICT;
CREATE INDEX capsules_claim_idx ON capsules(claim_id);

CREATE TABLE capsule_edges (                        -- dependency graph for taint
  parent_capsule_hash BLOB NOT NULL,
  child_leaf_index    INTEGER NOT NULL REFERENCES capsules(leaf_index),
  PRIMARY KEY (parent_capsule_hash, child_leaf_index)
) STRICT, WITHOUT ROWID;

CREATE TABLE incidents (                            -- committed outcomes of failed executions
  incident_id   INTEGER PRIMARY KEY,
  claim_id      BLOB NOT NULL REFERENCES claims(claim_id),
  leaf_index    INTEGER NOT NULL REFERENCES log_leaves(leaf_index),
  reason        TEXT NOT NULL,
  fuel_used     INTEGER NOT NULL,
  k_bits_settled REAL NOT NULL,
  created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE topic_pools (
  topic_id  BLOB PRIMARY KEY CHECK (length(topic_id) = 32),
  pool_json TEXT NOT NULL CHECK (json_valid(pool_json))
) STRICT;

CREATE TABLE holdout_pools (
  holdout_handle BLOB NOT NULL CHECK (length(holdout_handle) = 32),
  principal_id   TEXT NOT NULL DEFAULT '',          -- '' = the global pool
  pool_json      TEXT NOT NULL CHECK (json_valid(pool_json)),
  PRIMARY KEY (holdout_handle, principal_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE canary_states (
  oracle_id   TEXT NOT NULL,
  holdout_ref TEXT NOT NULL,
  state_json  TEXT NOT NULL CHECK (json_valid(state_json)),
  PRIMARY KEY (oracle_id, holdout_ref)
) STRICT, WITHOUT ROWID;

CREATE TABLE accounts (
  principal_id         TEXT PRIMARY KEY,
  credit_balance       INTEGER NOT NULL CHECK (credit_balance >= 0),
  daily_mint_remaining INTEGER NOT NULL,
  last_mint_day        INTEGER NOT NULL,
  credit_limit         INTEGER NOT NULL,
  daily_mint_limit     INTEGER NOT NULL,
  burned_total         INTEGER NOT NULL DEFAULT 0,
  denied_total         INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE idempotency_records (                  -- committed with the mutation they answer
  principal_id  TEXT NOT NULL,
  rpc_method    TEXT NOT NULL,
  request_id    TEXT NOT NULL,
  request_hash  BLOB NOT NULL CHECK (length(request_hash) = 32),
  response_json TEXT NOT NULL CHECK (json_valid(response_json)),
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (principal_id, rpc_method, request_id)
) STRICT, WITHOUT ROWID;

CREATE VIEW claims_overview AS
  SELECT lower(hex(claim_id)) AS claim_id_hex, owner_principal_id, claim_name,
         lower(hex(topic_id)) AS topic_id_hex, holdout_ref, oracle_id, lane, output_schema_id,
         state, last_decision, lower(hex(last_capsule_hash)) AS capsule_hash_hex, etl_index,
         created_at_ms, updated_at_ms
  FROM claims;

CREATE TABLE nullspecs (                            -- installed NullSpec contracts (spec 50 §3)
  nullspec_id    BLOB PRIMARY KEY CHECK (length(nullspec_id) = 32),
  oracle_id      TEXT NOT NULL,
  contract_json  TEXT NOT NULL CHECK (json_valid(contract_json)),
  installed_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE nullspec_activations (                 -- the active contract per (oracle_id, holdout)
  oracle_id    TEXT NOT NULL,
  holdout_ref  TEXT NOT NULL,
  nullspec_id  BLOB NOT NULL REFERENCES nullspecs(nullspec_id),
  activated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (oracle_id, holdout_ref)
) STRICT, WITHOUT ROWID;
