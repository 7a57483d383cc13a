"""Fast bulk builder of an n-leaf data dir, byte-for-byte what the daemon would have stored.

Appending a million leaves through ``LogService`` costs one commit each (minutes). This writes the
same rows directly: the schema comes from the package's own migrations (``Store``), payloads from
``encode_entry``, leaf hashes from ``merkle.hash_leaf`` and every completed perfect subtree from
``merkle.MemoryNodes`` (which runs ``completed_subtrees``, the store's append path), all in one
transaction. The single signed head is then produced by the service itself: ``LogService.start()``
commits a write group, and the service's pre-commit hook signs the grown tree exactly as it does in
the daemon. Nothing is signed or hashed by code in this file.

Built data dirs are cached per run by :class:`BuildCache` (one per leaf count).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw

from evidenceos.core import merkle
from evidenceos.core.canonical import encode_entry
from evidenceos.service.log_service import LogService
from evidenceos.store import log as log_table
from evidenceos.store.db import DB_FILENAME, Store
from evidenceos.store.keys import load_keyring
from evidenceos.store.lock import DataDirLock

BENCH_KIND = "bench.entry"

_INSERT_LEAF = (
    "INSERT INTO log_leaves(leaf_index, kind, payload, leaf_hash, payload_sha256, appended_at_ms, "
    "subtree_hashes) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def bench_entry(seq: int) -> dict[str, object]:
    """A log entry of realistic size (~150 bytes canonical), unique per ``seq``."""
    return {
        "kind": BENCH_KIND,
        "seq": seq,
        "capsule_hash": hashlib.sha256(seq.to_bytes(8, "big")).hexdigest(),
        "actor": "ops.bench",
        "note": "synthetic entry for benchmarks",
    }


def _payload_template() -> tuple[bytes, bytes, bytes]:
    """RFC 8785 of ``bench_entry`` split around its two varying members (keys sorted, no
    spaces; a safe integer is its decimal digits and a hex string needs no escaping)."""
    marker = 2**53 - 1
    sample = encode_entry({**bench_entry(0), "capsule_hash": "{HASH}", "seq": marker})
    head, rest = sample.split(b"{HASH}")
    middle, tail = rest.split(str(marker).encode())
    return head, middle, tail


_HEAD, _MIDDLE, _TAIL = _payload_template()
_CHECK_EVERY = 997


def bench_payload(seq: int) -> bytes:
    """``encode_entry(bench_entry(seq))`` without the generic canonicaliser, which is half the
    cost of a build; :func:`build_log` compares the two on every 997th leaf."""
    digest = hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()
    return b"".join((_HEAD, digest.encode(), _MIDDLE, str(seq).encode(), _TAIL))


@dataclass(frozen=True, slots=True)
class BuildReport:
    data_dir: Path
    leaves: int
    nodes: int
    seconds: float
    db_bytes: int
    root_hash: bytes


def build_log(data_dir: Path, leaves: int) -> BuildReport:
    """Create ``data_dir`` holding a started log of ``leaves`` entries and one signed head."""
    started = time.perf_counter()
    if (data_dir / DB_FILENAME).exists():
        raise FileExistsError(f"{data_dir / DB_FILENAME} already exists; build into a fresh dir")
    lock = DataDirLock(data_dir)
    try:
        Store(data_dir).close()  # schema through the package's migrations, WAL mode
        nodes = merkle.MemoryNodes()
        node_count = _bulk_insert(data_dir / DB_FILENAME, leaves, nodes)
        # The service signs the head: start() registers the key and signs the whole tree in
        # one write group, as the daemon does at start-up.
        with Store(data_dir) as store:
            keyring = load_keyring(data_dir, allow_generate=True)
            service = LogService(store, keyring)
            head = service.start()
            service.verify_on_start()
            with store.read() as conn:
                stored_size = log_table.tree_size(conn)
        expected_root = merkle.compute_root(leaves, nodes)
        if head.tree_size != leaves or stored_size != leaves or head.root_hash != expected_root:
            raise RuntimeError(
                f"bulk build mismatch: head size {head.tree_size}, stored {stored_size}, "
                f"wanted {leaves}; root {head.root_hash.hex()} vs {expected_root.hex()}"
            )
    finally:
        lock.release()
    db_bytes = sum(p.stat().st_size for p in data_dir.glob(DB_FILENAME + "*"))
    return BuildReport(
        data_dir=data_dir,
        leaves=leaves,
        nodes=node_count,
        seconds=time.perf_counter() - started,
        db_bytes=db_bytes,
        root_hash=head.root_hash,
    )


def _bulk_insert(db_path: Path, leaves: int, nodes: merkle.MemoryNodes) -> int:
    conn = apsw.Connection(str(db_path))
    try:
        # One big transaction: a rollback journal stays tiny (the file starts empty) where WAL
        # would grow to the size of the database before its checkpoint. The Store switches the
        # file back to WAL the next time it opens it.
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: no spills mid-transaction
        now_ms = time.time_ns() // 1_000_000

        def leaf_rows() -> Iterator[tuple[int, str, bytes, bytes, bytes, int, bytes]]:
            for index in range(leaves):
                payload = bench_payload(index)
                if index % _CHECK_EVERY == 0 and payload != encode_entry(bench_entry(index)):
                    raise RuntimeError(f"bench payload template drifted at leaf {index}")
                leaf_hash = merkle.hash_leaf(payload)
                nodes.append(leaf_hash)
                subtrees = []  # the subtrees this leaf completes, as the store keeps them
                level = 1
                while (index + 1) % (1 << level) == 0:
                    subtrees.append(nodes(level, ((index + 1) >> level) - 1))
                    level += 1
                yield (
                    index,
                    BENCH_KIND,
                    payload,
                    leaf_hash,
                    hashlib.sha256(payload).digest(),
                    now_ms,
                    b"".join(subtrees),
                )

        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_LEAF, leaf_rows())
            count = log_table.node_count(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return count
    finally:
        conn.close()


class BuildCache:
    """Data dirs built once per run under ``root`` and shared by the benchmarks that need them.

    Benchmarks that start a daemon on a cached dir leave it as a stopped daemon would (exported
    views, a remembered mirror); none appends, so the log itself never changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[int, BuildReport] = {}

    def get(self, leaves: int) -> BuildReport:
        report = self._built.get(leaves)
        if report is None:
            data_dir = self.root / f"log-{leaves}"
            data_dir.mkdir(parents=True, exist_ok=False)
            report = build_log(data_dir, leaves)
            self._built[leaves] = report
        return report

    @property
    def reports(self) -> list[BuildReport]:
        return list(self._built.values())
