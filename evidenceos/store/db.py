"""The one SQLite database that is the source of truth (DESIGN §2, §3).

``Store`` owns every ``apsw.Connection``. Writes go through a single writer thread that runs queued
mutation functions in groups inside one ``BEGIN IMMEDIATE`` transaction (group commit) and wakes
each caller only after ``COMMIT`` returned — the durable-before-ack point. Each queued function
runs inside its own savepoint, so one failing mutation rolls back alone and the rest of the group
still commits. Readers use per-thread connections with ``query_only`` on.

apsw exceptions stop here: :func:`translate_errors` turns them into domain errors.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import apsw

from evidenceos.errors import (
    AlreadyExists,
    ConfigError,
    EvidenceOSError,
    StorageError,
    StorageFull,
    Unavailable,
)

T = TypeVar("T")
Connection = apsw.Connection

DB_FILENAME = "evidenceos.db"
APPLICATION_ID = 0x45564F53  # "EVOS": marks the file as ours
BUSY_TIMEOUT_MS = 5000
MAX_GROUP = 256

log = logging.getLogger("evidenceos.store")

WriteFn = Callable[[Connection], Any]
PreCommitHook = Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Migrations shipped with the package, ordered by their ``NNNN_`` prefix."""
    found: list[Migration] = []
    pkg = resources.files("evidenceos.store") / "migrations"
    for entry in pkg.iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise StorageError(f"migration {expected:04d} is missing from the package")
    return found


def _storage_message(exc: apsw.Error, os_errno: int) -> str:
    """Say what is wrong with the disk in the operator's terms (ENOSPC, EROFS, EIO ...)."""
    if os_errno == errno.ENOSPC or (isinstance(exc, apsw.FullError) and os_errno == 0):
        what = "disk full: no space left on the data directory's filesystem (ENOSPC)"
        fix = "free disk space"
    elif os_errno == errno.EROFS or isinstance(exc, apsw.ReadOnlyError):
        what = "data directory is read-only (EROFS)"
        fix = "make the data directory writable again (remount read-write)"
    else:
        code = errno.errorcode.get(os_errno, str(os_errno)) if os_errno else "unknown errno"
        what = f"storage I/O error ({exc.__class__.__name__}: {exc}; {code})"
        fix = "check the disk"
    return (
        f"{what}; the write was rolled back and nothing was changed — {fix} and retry; "
        "reads keep working"
    )


@contextlib.contextmanager
def translate_errors(conn: Connection | None = None) -> Iterator[None]:
    """Map apsw exceptions to domain errors; nothing apsw-specific escapes the store.

    With ``conn``, a storage failure names the OS error SQLite saw on it (disk full, read-only)."""
    try:
        yield
    except EvidenceOSError:
        raise
    except (apsw.FullError, apsw.ReadOnlyError, apsw.IOError) as exc:
        os_errno = 0
        if conn is not None:
            with contextlib.suppress(apsw.Error):
                os_errno = int(conn.system_errno)
        raise StorageFull(_storage_message(exc, os_errno)) from exc
    except (apsw.BusyError, apsw.LockedError) as exc:
        raise Unavailable(f"database busy: {exc}; retry") from exc
    except apsw.ConstraintError as exc:
        raise AlreadyExists(f"constraint violated: {exc}") from exc
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise StorageError(f"database file is damaged: {exc}") from exc
    except apsw.Error as exc:
        raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc


def _configure(conn: Connection, *, writer: bool) -> None:
    conn.setbusytimeout(BUSY_TIMEOUT_MS)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=FULL")
    if writer:
        mode = conn.execute("PRAGMA journal_mode=WAL").get
        if str(mode).lower() != "wal":
            raise StorageError(f"could not switch the database to WAL mode (got {mode!r})")
    else:
        conn.execute("PRAGMA query_only=ON")


def _migrate(conn: Connection, migrations: list[Migration]) -> None:
    known = migrations[-1].version if migrations else 0
    app_id = conn.execute("PRAGMA application_id").get
    current = conn.execute("PRAGMA user_version").get
    if not isinstance(current, int) or not isinstance(app_id, int):
        raise StorageError("cannot read the database header (user_version, application_id)")
    if app_id not in (0, APPLICATION_ID):
        raise ConfigError(f"{DB_FILENAME} is not an EvidenceOS database (application_id {app_id})")
    if current > known:
        raise ConfigError(
            f"database schema version {current} is newer than this EvidenceOS supports "
            f"({known}); upgrade evidenceos before opening this data directory"
        )
    for migration in migrations[current:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(migration.sql)
            conn.execute(f"PRAGMA user_version={migration.version}")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            _record_schema_cookie(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied migration %04d_%s", migration.version, migration.name)


def _record_schema_cookie(conn: Connection) -> None:
    """Remember SQLite's schema cookie so start-up can tell an outside DDL edit (DESIGN §3)."""
    cookie = conn.execute("PRAGMA schema_version").get
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_cookie', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(cookie),),
    )


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


_STOP = object()


class _TransactionLost(Exception):
    """SQLite rolled the whole write transaction back under a failing job (SQLITE_FULL,
    SQLITE_IOERR): the group cannot commit; every job in it gets ``cause``."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Store:
    """The database of one data directory: one writer thread, per-thread readers."""

    def __init__(self, data_dir: Path, *, db_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.path = db_path if db_path is not None else data_dir / DB_FILENAME
        self._hooks: list[PreCommitHook] = []
        self._queue: queue.Queue[object] = queue.Queue()
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self.last_group_size = 0
        self._listeners: list[Callable[[int, float], None]] = []
        with translate_errors():
            data_dir.mkdir(parents=True, exist_ok=True)
            self._writer = apsw.Connection(str(self.path))
            _configure(self._writer, writer=True)
            _migrate(self._writer, load_migrations())
        self._thread = threading.Thread(target=self._run_writer, name="store-writer", daemon=True)
        self._thread.start()

    # -- writes -------------------------------------------------------------------------------

    def add_pre_commit_hook(self, hook: PreCommitHook) -> None:
        """Run ``hook(conn)`` at the end of every write group, inside its transaction."""
        self._hooks.append(hook)

    def add_commit_listener(self, listener: Callable[[int, float], None]) -> None:
        """Call ``listener(group_size, seconds)`` after each committed group (metrics, exports).
        Listeners run on the writer thread after COMMIT and must be quick."""
        self._listeners.append(listener)

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction; return its result once committed."""
        if self._closed:
            raise Unavailable("store is closed")
        job = _Job(fn)
        self._queue.put(job)
        result: T = job.future.result()
        return result

    def _run_writer(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group: list[_Job] = [first]  # type: ignore[list-item]
            stop_after = False
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                group.append(nxt)  # type: ignore[arg-type]
            self._commit_group(group)
            if stop_after:
                return

    def _commit_group(self, group: list[_Job]) -> None:
        conn = self._writer
        started = time.perf_counter()
        results: list[tuple[_Job, bool, Any]] = []
        try:
            with translate_errors(conn):
                conn.execute("BEGIN IMMEDIATE")
        except EvidenceOSError as exc:
            for job in group:
                job.future.set_exception(exc)
            return
        try:
            for job in group:
                results.append((job, *self._run_savepoint(conn, job.fn)))
            with translate_errors(conn):
                for hook in self._hooks:
                    hook(conn)
                conn.execute("COMMIT")
        except BaseException as exc:  # a hook or COMMIT failed: nothing of the group survives
            with contextlib.suppress(apsw.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, _TransactionLost):
                exc = exc.cause
            error = exc if isinstance(exc, EvidenceOSError) else StorageError(str(exc))
            for job in group:
                if not job.future.done():
                    job.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.last_group_size = len(group)
        elapsed = time.perf_counter() - started
        for listener in self._listeners:
            try:
                listener(len(group), elapsed)
            except Exception:  # a listener must never fail a committed write
                log.exception("commit listener failed")
        for job, ok, value in results:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    @staticmethod
    def _run_savepoint(conn: Connection, fn: WriteFn) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            with translate_errors(conn):
                value = fn(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future, never lost
            try:
                if not conn.in_transaction:
                    raise _TransactionLost(exc)
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            except apsw.Error:
                # SQLite already rolled the whole transaction back (disk full, I/O error):
                # the savepoint is gone and so is every job of the group.
                raise _TransactionLost(exc) from exc
            return False, exc
        conn.execute("RELEASE job")
        return True, value

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A per-thread read-only connection inside one read transaction (one snapshot)."""
        if self._closed:
            raise Unavailable("store is closed")
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with translate_errors():
                conn = apsw.Connection(str(self.path))
                _configure(conn, writer=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        with translate_errors():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Drain queued writes, then close every connection."""
        if self._closed:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(apsw.Error):
                    conn.close()
            self._readers.clear()
        with contextlib.suppress(apsw.Error):
            self._writer.close()

    @classmethod
    def open_copy(cls, path: Path) -> Store:
        """Open a database file outside a data dir (a backup) to verify it."""
        return cls(path.parent, db_path=path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_schema_cookie(self) -> None:
        """Accept the current schema as ours (after a verification that passed)."""
        self.write(_record_schema_cookie)

    def schema_cookie_matches(self) -> bool:
        with self.read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = 'schema_cookie'").get
            current = conn.execute("PRAGMA schema_version").get
        return stored is not None and str(current) == stored

    def backup_to(self, target: Path, progress: Callable[[int, int], None] | None = None) -> None:
        """Copy the live database with SQLite's online backup API (never a file copy of WAL)."""
        with translate_errors():
            source = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
            dest = apsw.Connection(str(target))
            try:
                with dest.backup("main", source, "main") as b:
                    while not b.done:
                        b.step(1024)
                        if progress is not None:
                            progress(b.pagecount - b.remaining, b.pagecount)
                dest.execute("PRAGMA journal_mode=DELETE")
            finally:
                dest.close()
                source.close()
