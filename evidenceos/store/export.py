"""Exported views of the database (DESIGN §2): files for people and reference tools.

They are produced from the database, never read back as truth, and written crash-safely
(``files.atomic_write``). ``etl.log`` is a mirror in the reference framing (spec 40 §1.1): the
exporter appends the missing tail when the file is an exact prefix of the log, and rewrites it
when it differs (naming the first differing record). Exports run off the acknowledgement path:
coalesced in the background, on SIGHUP, at clean shutdown and on ``evidenceosctl export``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from evidenceos.core.etl_framing import frame_record
from evidenceos.store import canary as canary_table
from evidenceos.store import claims as claims_table
from evidenceos.store import log as log_table
from evidenceos.store import pools as pools_table
from evidenceos.store import revocations as revocations_table
from evidenceos.store.accounts import export_accounts
from evidenceos.store.db import Connection, Store
from evidenceos.store.files import atomic_write, atomic_write_chunks
from evidenceos.store.governance import export_governance

ETL_LOG = "etl.log"
STATE_JSON = "state.json"
ACCOUNTS_JSON = "accounts.json"
STATE_FORMAT = "evidenceos.state.v1"
EXPORT_LOCK = ".export.lock"
_MIRROR_META = "etl_log_mirror"
_U32 = struct.Struct("<I")

log = logging.getLogger("evidenceos.export")

Section = Callable[[Connection], Any]


@dataclass(frozen=True, slots=True)
class MirrorResult:
    leaves: int
    appended: int
    rewritten: bool
    first_difference: int | None


def _read_records(fh: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """Yield (payload, end offset) of each well-formed record; stop at the first bad one."""
    import zlib

    offset = 0
    while True:
        header = fh.read(4)
        if len(header) < 4:
            return
        (length,) = _U32.unpack(header)
        body = fh.read(length + 4)
        if len(body) < length + 4:
            return
        payload, crc = body[:length], _U32.unpack(body[length:])[0]
        if zlib.crc32(header + payload) != crc:
            return
        offset += 8 + length
        yield payload, offset


class Exporter:
    """Writes every exported view of one data dir."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self._store = store
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self.state_sections: dict[str, Section] = {}

    def export_all(self, *, full_check: bool = False) -> list[Path]:
        """Write every view. An flock on ``.export.lock`` keeps the daemon and
        ``evidenceosctl export`` from interleaving appends to ``etl.log``."""
        with self._lock:
            fd = os.open(self._data_dir / EXPORT_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.export_etl_log(full_check=full_check)
                self.export_state()
                with self._store.read() as conn:
                    accounts = export_accounts(conn)
                    governance_paths = export_governance(conn, self._data_dir)
                accounts_text = json.dumps(accounts, indent=2, sort_keys=True) + "\n"
                atomic_write(self._data_dir / ACCOUNTS_JSON, accounts_text.encode())
            finally:
                os.close(fd)
        return [
            self._data_dir / ETL_LOG,
            self._data_dir / STATE_JSON,
            self._data_dir / ACCOUNTS_JSON,
            *governance_paths,
        ]

    # -- etl.log ------------------------------------------------------------------------------

    def export_etl_log(self, *, full_check: bool = False) -> MirrorResult:
        path = self._data_dir / ETL_LOG
        with self._store.read() as conn:
            size = log_table.tree_size(conn)
            stored = conn.execute("SELECT value FROM meta WHERE key = ?", (_MIRROR_META,)).get
        have = self._trusted_prefix(path, str(stored) if stored else None, size, full_check)
        if have is None:
            first = self._first_difference(path, size)
            self._rewrite(path, size)
            if first is not None:
                log.warning(
                    "etl.log differed from the database at record %d; rewritten from the database",
                    first,
                )
            return MirrorResult(size, size, True, first)
        appended = 0
        if have < size:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                batch: list[bytes] = []
                with self._store.read() as conn:
                    for leaf in log_table.iter_leaves(conn, have):
                        if leaf.leaf_index >= size:
                            break  # committed after `size` was read: the next export copies it
                        batch.append(frame_record(leaf.payload))
                        if len(batch) >= 4096:
                            os.write(fd, b"".join(batch))
                            batch.clear()
                if batch:
                    os.write(fd, b"".join(batch))
                os.fdatasync(fd)
            finally:
                os.close(fd)
            appended = size - have
        self._remember(path, size)
        return MirrorResult(size, appended, False, None)

    def _trusted_prefix(
        self, path: Path, stored: str | None, size: int, full_check: bool
    ) -> int | None:
        """How many leaves the file already holds correctly, or None if it must be rewritten."""
        if not path.exists():
            return None
        file_size = path.stat().st_size
        if stored and not full_check:
            leaves_s, bytes_s = stored.split(":", 1)
            if int(bytes_s) == file_size and int(leaves_s) <= size:
                return int(leaves_s)
        return self._verified_prefix(path, size, file_size)

    def _verified_prefix(self, path: Path, size: int, file_size: int) -> int | None:
        count = 0
        end = 0
        with path.open("rb") as fh, self._store.read() as conn:
            leaves = log_table.iter_leaves(conn)
            for payload, offset in _read_records(fh):
                leaf = next(leaves, None)
                if leaf is None or leaf.payload != payload:
                    return None
                count += 1
                end = offset
        if end != file_size or count > size:
            return None
        return count

    def _first_difference(self, path: Path, size: int) -> int | None:
        if not path.exists():
            return None
        with path.open("rb") as fh, self._store.read() as conn:
            leaves = log_table.iter_leaves(conn)
            index = 0
            for payload, _ in _read_records(fh):
                leaf = next(leaves, None)
                if leaf is None or leaf.payload != payload:
                    return index
                index += 1
        return index if index <= size else None

    def _rewrite(self, path: Path, size: int) -> None:
        """Rewrite the mirror from one snapshot, streamed in batches (bounded memory)."""
        written = [0]

        def batches(conn: Connection) -> Iterator[bytes]:
            batch: list[bytes] = []
            for leaf in log_table.iter_leaves(conn):
                batch.append(frame_record(leaf.payload))
                written[0] += 1
                if len(batch) >= 4096:
                    yield b"".join(batch)
                    batch.clear()
            if batch:
                yield b"".join(batch)

        with self._store.read() as conn:
            atomic_write_chunks(path, batches(conn))
        self._remember(path, written[0])

    def _remember(self, path: Path, size: int) -> None:
        """Record what the mirror holds; only when it changed, so that an export never causes
        a commit that schedules another export."""
        value = f"{size}:{path.stat().st_size if path.exists() else 0}"
        with self._store.read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = ?", (_MIRROR_META,)).get
        if stored == value:
            return
        self._store.write(
            lambda conn: conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_MIRROR_META, value),
            )
        )

    # -- state.json ---------------------------------------------------------------------------

    def export_state(self) -> Path:
        """``state.json``: the committed state in one snapshot, hashes as lowercase hex."""
        path = self._data_dir / STATE_JSON
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
            doc: dict[str, Any] = {
                "format": STATE_FORMAT,
                "log": {
                    "tree_size": head.tree_size if head else 0,
                    "root_hash": head.root_hash.hex() if head else None,
                    "key_id": head.key_id.hex() if head else None,
                    "signature": head.signature.hex() if head else None,
                },
                "claims": [c.to_json() for c in claims_table.iter_claims(conn)],
                "revocations": revocations_table.state_section(conn),
                "topic_pools": [
                    {"topic_id": topic.hex(), **pool.to_json()}
                    for topic, pool in pools_table.iter_topic_pools(conn)
                ],
                "holdout_pools": [
                    {"holdout_handle": handle.hex(), "principal_id": principal or None}
                    | pool.to_json()
                    for handle, principal, pool in pools_table.iter_holdout_pools(conn)
                ],
                "canary_states": [
                    {"oracle_id": oracle, "holdout_ref": ref, **state.to_json()}
                    for oracle, ref, state in canary_table.iter_canary_states(conn)
                ],
            }
            for name, section in self.state_sections.items():
                doc[name] = section(conn)
        # Compact on purpose: ``indent`` turns off json's C encoder, which made rewriting a
        # large state.json several times slower (docs/performance.md).
        text = json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
        atomic_write(path, text.encode())
        return path


class ExportScheduler:
    """Coalesces export requests into a background thread, off the acknowledgement path."""

    def __init__(
        self, exporter: Exporter, delay_s: float = 0.2, min_interval_s: float = 1.0
    ) -> None:
        self._exporter = exporter
        self._delay_s = delay_s
        self._min_interval_s = min_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exporter", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._stop.wait(self._delay_s)
            self._wake.clear()
            try:
                self._exporter.export_all()
            except Exception:  # a failed export must never take the daemon down
                log.exception("background export failed; will retry on the next change")
            # Coalesce bursts: at most one background export per interval.
            self._stop.wait(self._min_interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
