"""Exported views of the database (DESIGN §2): files for people and reference tools.

They are produced from the database, never read back as truth, and only ever replaced whole:
each new version is written to a temp file in the data dir, fsynced, renamed over the old file,
and the directory fsynced (``files.AtomicFile``), so a reader or a crash sees the old file or the
new one, never a torn one. ``etl.log`` is a mirror in the reference framing (spec 40 §1.1): a new
version is the verified prefix of the current file, copied in the kernel (reflink,
``copy_file_range`` or a chunked copy), followed by the missing records framed from the database
in bounded batches; a file that differs from the log is cut back to its last matching record
(the exporter names the first differing one). Exports run off the acknowledgement path:
coalesced in the background, on SIGHUP, at clean shutdown and on ``evidenceosctl export``; the
background scheduler spaces ``etl.log`` rewrites by :data:`ETL_REFRESH_FACTOR` times the last
rewrite's duration.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from evidenceos.core.etl_framing import frame_record
from evidenceos.core.sth import SignedTreeHead
from evidenceos.errors import LogIntegrityError
from evidenceos.store import canary as canary_table
from evidenceos.store import claims as claims_table
from evidenceos.store import log as log_table
from evidenceos.store import pools as pools_table
from evidenceos.store import revocations as revocations_table
from evidenceos.store.accounts import export_accounts
from evidenceos.store.db import Connection, Store
from evidenceos.store.files import (
    AtomicFile,
    ShortCopyError,
    atomic_write,
    copy_prefix,
    open_for_copy,
    remove_stale_temp,
    temp_path,
)
from evidenceos.store.governance import export_governance

ETL_LOG = "etl.log"
STATE_JSON = "state.json"
ACCOUNTS_JSON = "accounts.json"
STATE_FORMAT = "evidenceos.state.v1"
EXPORT_LOCK = ".export.lock"
ETL_BATCH_RECORDS: Final = 4096
ETL_BATCH_BYTES: Final = 1 << 20
"""A batch of framed records is written once it holds this many records or bytes: the most of
the log an ``etl.log`` export ever holds in memory."""
ETL_REFRESH_FACTOR: Final = 10.0
"""The background scheduler starts an ``etl.log`` rewrite no sooner than this many times the
previous rewrite's duration after it ended, so rewrites take at most 1/(1+10) ≈ 9% of the time
however large the log (a rewrite is O(file size) unless the filesystem can reflink)."""
_MIRROR_META = "etl_log_mirror"
_U32 = struct.Struct("<I")
_PAYLOADS = (
    "SELECT payload FROM log_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
)

log = logging.getLogger("evidenceos.export")

Section = Callable[[Connection], Any]


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """What one ``etl.log`` export did."""

    leaves: int
    """Records in ``etl.log`` afterwards (the tree size the export read)."""
    appended: int
    """Records framed from the database into the new file."""
    rewritten: bool
    """The old file was missing or was not a prefix of the log."""
    first_difference: int | None
    """The first record where the old file differed from the log (None: it did not)."""
    kept: int = 0
    """Records taken over from the old file (its verified prefix)."""
    published: bool = False
    """A new file was renamed over ``etl.log`` (False: it was already up to date)."""
    seconds: float = 0.0
    """Time to build and publish the new file (0 when nothing was published)."""
    copy_method: str | None = None
    """How the kept prefix was copied (``clone``, ``copy_file_range``, ``chunks``)."""


def etl_refresh_due_at(
    last_end: float | None, last_seconds: float, factor: float = ETL_REFRESH_FACTOR
) -> float:
    """Earliest (monotonic) time for the next background ``etl.log`` rewrite.

    ``last_end`` is when the previous rewrite finished (None: there was none, so now) and
    ``last_seconds`` how long it took. Waiting ``factor`` times as long as the rewrite took
    bounds the time spent rewriting to ``1 / (1 + factor)`` of the wall clock."""
    if last_end is None:
        return -math.inf
    return last_end + factor * max(0.0, last_seconds)


@dataclass(frozen=True, slots=True)
class _Marker:
    """``meta.etl_log_mirror``: the records, size and identity of the file last published.

    The identity (inode, ctime) changes whenever anyone else replaces or edits the file (ctime
    cannot be set back), so a matching marker means the file is still exactly what the exporter
    published and need not be re-read."""

    leaves: int
    size: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, leaves: int, st: os.stat_result) -> _Marker:
        return cls(leaves, st.st_size, st.st_ino, st.st_ctime_ns)

    @classmethod
    def parse(cls, value: object) -> _Marker | None:
        """None for anything but the current format (an older ``leaves:bytes`` marker makes the
        next export verify the file once)."""
        if not isinstance(value, str):
            return None
        parts = value.split(":")
        if len(parts) != 4:
            return None
        try:
            leaves, size, ino, ctime_ns = (int(p) for p in parts)
        except ValueError:
            return None
        return cls(leaves, size, ino, ctime_ns)

    def encode(self) -> str:
        return f"{self.leaves}:{self.size}:{self.ino}:{self.ctime_ns}"

    def describes(self, st: os.stat_result) -> bool:
        return (self.size, self.ino, self.ctime_ns) == (st.st_size, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class _Plan:
    keep: int  # records of the old file to keep
    keep_bytes: int
    first_difference: int | None


def _read_records(fh: BinaryIO, file_size: int) -> Iterator[tuple[bytes, int]]:
    """Yield (payload, end offset) of each well-formed record; stop at the first bad one.

    A length prefix pointing past the end of the file stops the scan before anything is read,
    so a damaged length never makes this read more than one record into memory."""
    offset = 0
    while True:
        header = fh.read(4)
        if len(header) < 4:
            return
        (length,) = _U32.unpack(header)
        if offset + 8 + length > file_size:
            return
        body = fh.read(length + 4)
        if len(body) < length + 4:
            return
        payload, crc = body[:length], _U32.unpack(body[length:])[0]
        if zlib.crc32(header + payload) != crc:
            return
        offset += 8 + length
        yield payload, offset


def _iter_payloads(conn: Connection, start: int, stop: int) -> Iterator[bytes]:
    for (payload,) in conn.execute(_PAYLOADS, (start, stop)):
        yield bytes(payload)


class Exporter:
    """Writes every exported view of one data dir."""

    def __init__(
        self, store: Store, data_dir: Path, sign_head: Callable[[], object] | None = None
    ) -> None:
        """``sign_head`` (the daemon's ``LogService.signed_tree_head``) makes sure a stored head
        covers every committed leaf before ``state.json`` is read (decision D-F2); offline
        exports show the newest stored head."""
        self._store = store
        self._data_dir = data_dir
        self._sign_head = sign_head
        self._lock = threading.RLock()
        self._lock_depth = 0  # > 0 while this exporter holds the flock (export_all nests)
        self.state_sections: dict[str, Section] = {}
        self.last_mirror: MirrorResult | None = None
        """The result of the last ``etl.log`` export (read by :class:`ExportScheduler`)."""

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This exporter's lock and an flock on ``.export.lock``, which keeps the daemon and
        ``evidenceosctl export`` from building the same temp files at once."""
        with self._lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            fd = os.open(self._data_dir / EXPORT_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_depth = 1
                yield
            finally:
                self._lock_depth = 0
                os.close(fd)

    def export_all(self, *, full_check: bool = False, include_etl_log: bool = True) -> list[Path]:
        """Write every view (``include_etl_log=False``: all but ``etl.log``, which the
        background scheduler refreshes on its own, slower schedule); return the paths written."""
        with self._exclusive():
            if include_etl_log:
                self.export_etl_log(full_check=full_check)
            self.export_state()
            with self._store.read() as conn:
                accounts = export_accounts(conn)
                governance_paths = export_governance(conn, self._data_dir)
            accounts_text = json.dumps(accounts, indent=2, sort_keys=True) + "\n"
            atomic_write(self._data_dir / ACCOUNTS_JSON, accounts_text.encode())
        return [
            *([self._data_dir / ETL_LOG] if include_etl_log else []),
            self._data_dir / STATE_JSON,
            self._data_dir / ACCOUNTS_JSON,
            *governance_paths,
        ]

    # -- etl.log ------------------------------------------------------------------------------

    def export_etl_log(self, *, full_check: bool = False) -> MirrorResult:
        """Bring ``etl.log`` up to the committed log. ``full_check`` re-reads the whole file
        instead of trusting ``meta.etl_log_mirror`` (``evidenceosctl export`` does)."""
        with self._exclusive():
            return self._export_etl_log(full_check=full_check)

    def _export_etl_log(self, *, full_check: bool) -> MirrorResult:
        path = self._data_dir / ETL_LOG
        if remove_stale_temp(path):
            log.info("removed %s left by an interrupted export", temp_path(path).name)
        with open_for_copy(path) as src:
            st = os.fstat(src) if src is not None else None
            with self._store.read() as conn:
                size = log_table.tree_size(conn)
                stored = conn.execute("SELECT value FROM meta WHERE key = ?", (_MIRROR_META,)).get
                plan = self._plan(conn, src, st, _Marker.parse(stored), size, full_check)
            if (
                st is not None
                and plan.first_difference is None
                and plan.keep == size
                and plan.keep_bytes == st.st_size
            ):
                self._remember(path, size, st)
                result = MirrorResult(size, 0, False, None, kept=size)
            else:
                if plan.first_difference is not None:
                    log.warning(
                        "etl.log differed from the database at record %d; rebuilt from the "
                        "database",
                        plan.first_difference,
                    )
                try:
                    result = self._publish(path, src, plan, size, rewritten=src is None)
                except ShortCopyError:  # the file shrank under us: nothing of it is trusted
                    log.warning("etl.log changed during the export; rebuilt from the database")
                    result = self._publish(path, None, _Plan(0, 0, None), size, rewritten=True)
        self.last_mirror = result
        return result

    def _plan(
        self,
        conn: Connection,
        src: int | None,
        st: os.stat_result | None,
        marker: _Marker | None,
        size: int,
        full_check: bool,
    ) -> _Plan:
        """How much of the current file to keep."""
        if src is None or st is None:
            return _Plan(0, 0, None)
        if not full_check and marker is not None and marker.describes(st) and marker.leaves <= size:
            return _Plan(marker.leaves, st.st_size, None)
        return self._verify(conn, src, st.st_size, size)

    def _verify(self, conn: Connection, src: int, file_size: int, size: int) -> _Plan:
        """Compare the file record by record with the log: its longest matching prefix."""
        count = end = 0
        expected = _iter_payloads(conn, 0, size)
        with open(src, "rb", buffering=1 << 16, closefd=False) as fh:  # an fd: shares it
            fh.seek(0)
            for payload, offset in _read_records(fh, file_size):
                if next(expected, None) != payload:
                    return _Plan(count, end, count)
                count += 1
                end = offset
        return _Plan(count, end, None if end == file_size else count)

    def _publish(
        self, path: Path, src: int | None, plan: _Plan, size: int, *, rewritten: bool
    ) -> MirrorResult:
        """A new ``etl.log``: the kept prefix copied in the kernel, then records ``plan.keep``
        to ``size`` framed from the database in batches; fsync, rename, fsync the directory."""
        started = time.monotonic()
        out = AtomicFile(path)
        try:
            method, appended = self._fill(out, src, plan, size)
        except BaseException:
            out.abort()
            raise
        published = out.commit()
        seconds = time.monotonic() - started
        self._remember(path, size, published)
        return MirrorResult(
            size,
            appended,
            rewritten or plan.first_difference is not None,
            plan.first_difference,
            kept=plan.keep,
            published=True,
            seconds=seconds,
            copy_method=method,
        )

    def _fill(
        self, out: AtomicFile, src: int | None, plan: _Plan, size: int
    ) -> tuple[str | None, int]:
        method = None
        if src is not None and plan.keep_bytes:
            method = copy_prefix(src, out.fd, plan.keep_bytes)
        appended = 0
        batch: list[bytes] = []
        pending = 0
        with self._store.read() as conn:
            for payload in _iter_payloads(conn, plan.keep, size):
                record = frame_record(payload)
                batch.append(record)
                pending += len(record)
                appended += 1
                if len(batch) >= ETL_BATCH_RECORDS or pending >= ETL_BATCH_BYTES:
                    out.write(b"".join(batch))
                    batch.clear()
                    pending = 0
        if batch:
            out.write(b"".join(batch))
        if appended != size - plan.keep:
            raise LogIntegrityError(
                f"log damaged: leaves {plan.keep}..{size - 1} should exist, found {appended}"
            )
        return method, appended

    def _remember(self, path: Path, size: int, st: os.stat_result | None = None) -> None:
        """Record what the mirror holds; only when it changed, so that an export never causes
        a commit that schedules another export."""
        if st is None:
            try:
                st = path.stat()
            except FileNotFoundError:
                return
        value = _Marker.of(size, st).encode()
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
        for attempt in range(3):
            if self._sign_head is not None:
                self._sign_head()
            with self._store.read() as conn:
                head = log_table.latest_head(conn)
                if (  # commits after the head was signed: sign again, so it proves them all
                    self._sign_head is not None
                    and attempt < 2
                    and (head.tree_size if head else 0) < log_table.tree_size(conn)
                ):
                    continue
                doc = self._state_doc(conn, head)
                break
        # Compact on purpose: ``indent`` turns off json's C encoder, which made rewriting a
        # large state.json several times slower (docs/performance.md).
        text = json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
        atomic_write(path, text.encode())
        return path

    def _state_doc(self, conn: Connection, head: SignedTreeHead | None) -> dict[str, Any]:
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
                {"holdout_handle": handle.hex(), "principal_id": principal or None} | pool.to_json()
                for handle, principal, pool in pools_table.iter_holdout_pools(conn)
            ],
            "canary_states": [
                {"oracle_id": oracle, "holdout_ref": ref, **state.to_json()}
                for oracle, ref, state in canary_table.iter_canary_states(conn)
            ],
        }
        for name, section in self.state_sections.items():
            doc[name] = section(conn)
        return doc


class ExportScheduler:
    """Coalesces export requests into a background thread, off the acknowledgement path.

    After a change it waits ``delay_s``, exports, then waits ``min_interval_s`` (or ten times
    as long as the export took, if that is longer) before the next export: a background export
    burns CPU and fsyncs big files while requests are in flight (decision D-O6). ``etl.log``
    is included only when :func:`etl_refresh_due_at` allows (a rewrite is O(file size));
    otherwise the other views are written and a timer brings ``etl.log`` up to
    date once it is due, even if nothing else changes. ``request(full=True)`` includes it at once.
    """

    def __init__(
        self,
        exporter: Exporter,
        delay_s: float = 0.2,
        min_interval_s: float = 5.0,
        *,
        etl_refresh_factor: float = ETL_REFRESH_FACTOR,
    ) -> None:
        self._exporter = exporter
        self._delay_s = delay_s
        self._min_interval_s = min_interval_s
        self._etl_refresh_factor = etl_refresh_factor
        self._mutex = threading.Lock()
        self._etl_forced = False
        self._etl_pending = False  # etl.log was left out of an export and is not refreshed yet
        self._etl_last_end: float | None = None
        self._etl_last_seconds = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exporter", daemon=True)
        self._thread.start()

    def request(self, *, full: bool = False) -> None:
        """Export soon. ``full``: bring ``etl.log`` up to date too, whatever its schedule."""
        if full:
            with self._mutex:
                self._etl_forced = True
        self._wake.set()

    def etl_due_at(self) -> float:
        """When the next background ``etl.log`` rewrite may start (``time.monotonic``)."""
        return etl_refresh_due_at(
            self._etl_last_end, self._etl_last_seconds, self._etl_refresh_factor
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = None
            if self._etl_pending:
                timeout = max(0.0, self.etl_due_at() - time.monotonic())
            changed = self._wake.wait(timeout)
            if self._stop.is_set():
                return
            if changed:
                self._stop.wait(self._delay_s)
                if self._stop.is_set():
                    return  # the shutdown export follows
                self._wake.clear()
            started = time.monotonic()
            self._export_once(changed=changed)
            # Coalesce bursts: at most one background export per interval, and exports of a
            # big state (state.json grows with every claim ever stored) take at most ~1/11 of
            # the time, like etl.log rewrites.
            ended = time.monotonic()
            due = etl_refresh_due_at(ended, ended - started)  # the default 1:10 duty cycle
            self._stop.wait(max(self._min_interval_s, due - ended))

    def _export_once(self, *, changed: bool) -> None:
        with self._mutex:
            forced, self._etl_forced = self._etl_forced, False
        # Without a change the timer fired: etl.log is what is due.
        include = forced or not changed or time.monotonic() >= self.etl_due_at()
        try:
            if changed:
                self._exporter.export_all(include_etl_log=include)
            else:
                self._exporter.export_etl_log()
        except Exception:  # a failed export must never take the daemon down
            log.exception("background export failed; will retry on the next change")
            with self._mutex:  # a SIGHUP's full refresh is still owed
                self._etl_forced = self._etl_forced or forced
            self._etl_pending = False
            return
        if not include:
            self._etl_pending = True
            return
        self._etl_pending = False
        result = self._exporter.last_mirror
        if result is not None and result.published:
            self._etl_last_end = time.monotonic()
            self._etl_last_seconds = result.seconds

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
