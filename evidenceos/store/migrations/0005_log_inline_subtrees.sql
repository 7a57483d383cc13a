-- 0005: each completed perfect-subtree hash moves into the row of the leaf that completed it,
-- so a durable append writes one B-tree page (the newest leaf's) instead of three; and the
-- governance-leaf index covers only governance leaves. The old table becomes a view of the
-- same shape, so audit queries on merkle_nodes keep working.

-- Leaf i completes the subtrees at levels 1..t, t = number of trailing 1 bits of i: node
-- (level, (i + 1) / 2^level - 1). subtree_hashes holds their hashes, level 1 first.
DROP TRIGGER log_leaves_no_update;
ALTER TABLE log_leaves ADD COLUMN subtree_hashes BLOB NOT NULL DEFAULT x''
  CHECK (length(subtree_hashes) % 32 = 0);
UPDATE log_leaves SET subtree_hashes = n.hashes
  FROM (SELECT ((node_index + 1) << level) - 1 AS end_leaf,
               unhex(group_concat(hex(hash), '' ORDER BY level)) AS hashes
        FROM merkle_nodes GROUP BY end_leaf) AS n
  WHERE log_leaves.leaf_index = n.end_leaf;
CREATE TRIGGER log_leaves_no_update BEFORE UPDATE ON log_leaves
  BEGIN SELECT RAISE(ABORT, 'log_leaves is append-only'); END;

DROP TRIGGER merkle_nodes_no_update;
DROP TRIGGER merkle_nodes_no_delete;
DROP TABLE merkle_nodes;

CREATE VIEW merkle_nodes AS
  WITH RECURSIVE levels(level) AS (SELECT 1 UNION ALL SELECT level + 1 FROM levels WHERE level < 63)
  SELECT levels.level AS level,
         ((l.leaf_index + 1) >> levels.level) - 1 AS node_index,
         substr(l.subtree_hashes, (levels.level - 1) * 32 + 1, 32) AS hash
  FROM log_leaves l JOIN levels ON length(l.subtree_hashes) >= levels.level * 32;

DROP INDEX log_leaves_kind_idx;
CREATE INDEX log_leaves_governance_idx ON log_leaves(leaf_index) WHERE kind = 'governance';
