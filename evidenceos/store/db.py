"""The one SQLite database that is the source of truth (DESIGN §2, §3).

``Store`` owns every ``apsw.Connection``. Writes are serialised on one writer connection. A
caller that finds it idle and nobody queued commits its own mutation on its own thread (no
hand-off: the single-caller latency is one ``COMMIT``); otherwise the mutation queues and the
writer thread runs queued functions in groups inside one ``BEGIN IMMEDIATE`` transaction (group
commit). Either way the caller is woken only after ``COMMIT`` returned — the durable-before-ack
point (a group's callers are woken during the next group's ``COMMIT``, D-F11). In a group each
function runs inside its own savepoint, so one failing mutation rolls back alone and the rest
still commit. Readers use per-thread connections with ``query_only`` on.

apsw exceptions stop here: :func:`translate_errors` turns them into domain errors.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
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
MIN_SQLITE = (3, 44, 0)  # migration 0005: group_concat(... ORDER BY ...), unhex()
MAX_GROUP = 256
HOLD_WAKEUPS_S = 0.001  # longest a committed group's callers wait for the next group's COMMIT

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


class translate_errors:  # used like a function: ``with translate_errors(conn):``
    """Map apsw exceptions to domain errors; nothing apsw-specific escapes the store.

    With ``conn``, a storage failure names the OS error SQLite saw on it (disk full, read-only).
    A class rather than a generator context manager: it wraps every write, and this is cheaper."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection | None = None) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or isinstance(exc, EvidenceOSError) or not isinstance(exc, apsw.Error):
            return
        raise _domain_error(exc, self._conn) from exc


def _domain_error(exc: apsw.Error, conn: Connection | None) -> EvidenceOSError:
    if isinstance(exc, (apsw.FullError, apsw.ReadOnlyError, apsw.IOError)):
        os_errno = 0
        if conn is not None:
            with contextlib.suppress(apsw.Error):
                os_errno = int(conn.system_errno)
        return StorageFull(_storage_message(exc, os_errno))
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return Unavailable(f"database busy: {exc}; retry")
    if isinstance(exc, apsw.ConstraintError):
        return AlreadyExists(f"constraint violated: {exc}")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StorageError(f"database file is damaged: {exc}")
    return StorageError(f"database error: {exc.__class__.__name__}: {exc}")


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
    pending = migrations[current:]
    if pending and _sqlite_version() < MIN_SQLITE:
        raise ConfigError(
            f"SQLite {apsw.sqlite_lib_version()} is too old to upgrade this database "
            f"(needs {'.'.join(map(str, MIN_SQLITE))}); install a current apsw"
        )
    # A schema changed outside evidenceosd before this upgrade must still look changed after
    # it, or the migration would launder the edit (start-up re-hashes the log when it does).
    moved = current > 0 and not _schema_cookie_matches(conn)
    for migration in pending:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(migration.sql)
            conn.execute(f"PRAGMA user_version={migration.version}")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            _record_schema_cookie(conn, moved=moved)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied migration %04d_%s", migration.version, migration.name)


def _sqlite_version() -> tuple[int, ...]:
    return tuple(int(part) for part in apsw.sqlite_lib_version().split(".")[:3])


def _record_schema_cookie(conn: Connection, *, moved: bool = False) -> None:
    """Remember SQLite's schema cookie so start-up can tell an outside DDL edit (DESIGN §3);
    ``moved`` records a value that never matches, so the next start-up re-hashes the log."""
    cookie = (
        "moved outside evidenceosd" if moved else str(conn.execute("PRAGMA schema_version").get)
    )
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_cookie', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (cookie,),
    )


def _schema_cookie_matches(conn: Connection) -> bool:
    stored = conn.execute("SELECT value FROM meta WHERE key = 'schema_cookie'").get
    return stored is not None and str(conn.execute("PRAGMA schema_version").get) == stored


class _Job:
    """One queued mutation and its outcome. ``_done`` is a plain lock held until the outcome is
    set: the cheapest one-shot wake-up CPython has (a Future adds a Condition and callbacks)."""

    __slots__ = ("_done", "_ok", "_value", "fn", "isolated")

    def __init__(self, fn: WriteFn, isolated: bool = True) -> None:
        self.fn = fn
        self.isolated = isolated
        self._done = threading.Lock()
        self._done.acquire()
        self._ok = False
        self._value: Any = None

    def done(self) -> bool:
        return not self._done.locked()

    def set_result(self, value: Any) -> None:
        self._ok, self._value = True, value
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self._value = exc
        self._done.release()

    def result(self) -> Any:
        self._done.acquire()
        if self._ok:
            return self._value
        raise self._value


_Outcomes = list[tuple[_Job, bool, Any]]


def _wake_callers(outcomes: _Outcomes) -> None:
    """Hand committed outcomes to their callers (each once: the list is emptied)."""
    for job, ok, value in outcomes:
        if ok:
            job.set_result(value)
        else:
            job.set_exception(value)
    outcomes.clear()


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
        self._pending: collections.deque[_Job] = collections.deque()
        self._wake = threading.Event()  # set when jobs are pending (or the store stops)
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # held while a group runs on the writer connection
        self._closed = False
        self._stopping = False
        self.last_group_size = 0
        self.generation = 0
        """Changes whenever rows may differ from what this store's writes left: another
        connection (a CLI tool, another process) committed, or a job's work was rolled back.
        What a write function learnt about rows it wrote (a cache) is valid while it stays the
        same."""
        self._data_version: int | None = None  # SQLite's data version after our last COMMIT
        self._listeners: list[Callable[[int, float], None]] = []
        with translate_errors():
            data_dir.mkdir(parents=True, exist_ok=True)
            self._writer = apsw.Connection(str(self.path))
            _configure(self._writer, writer=True)
            _migrate(self._writer, load_migrations())
            # The store's own statements (BEGIN, COMMIT, savepoints) reuse one cursor:
            # Connection.execute makes a new one per statement, ~1.5 µs each after a wait.
            self._statements = self._writer.cursor()
        self._thread = threading.Thread(target=self._run_writer, name="store-writer", daemon=True)
        self._thread.start()

    # -- writes -------------------------------------------------------------------------------

    def add_pre_commit_hook(self, hook: PreCommitHook) -> None:
        """Run ``hook(conn)`` at the end of every write group, inside its transaction."""
        self._hooks.append(hook)

    def add_commit_listener(self, listener: Callable[[int, float], None]) -> None:
        """Call ``listener(group_size, seconds)`` after each committed group (metrics, exports).
        Listeners run on the committing thread after COMMIT and must be quick."""
        self._listeners.append(listener)

    def write(self, fn: Callable[[Connection], T], *, isolated: bool = True) -> T:
        """Run ``fn(conn)`` in a write transaction; return its result once committed.

        ``isolated=False`` is for functions that fail only when the whole transaction is lost
        (a log append: disk full, I/O error): in a group they run without a savepoint of their
        own (two statements less each), and if one fails anyway the whole group fails with it."""
        if self._stopping:
            raise Unavailable("store is closed")
        if not self._pending and self._commit_lock.acquire(blocking=False):
            try:  # idle writer, nobody waiting: commit on this thread
                if self._stopping:
                    raise Unavailable("store is closed")
                value: T = self._commit_one(fn)
            finally:
                self._commit_lock.release()
            return value
        job = _Job(fn, isolated)
        self._pending.append(job)  # deque appends are atomic; cheaper than queue.Queue
        if not self._wake.is_set():  # set and not yet cleared: the writer will see this job
            self._wake.set()
        if self._writer_gone():  # raced with close()
            with contextlib.suppress(ValueError):  # ValueError: close() already failed it
                self._pending.remove(job)
                raise Unavailable("store is closed")
        result: T = job.result()
        return result

    def statements(self, conn: Connection) -> apsw.Cursor:
        """A cursor for complete statements inside a write function on ``conn``: the writer's
        reusable one (no cursor built per statement), or a new one on any other connection."""
        return self._statements if conn is self._writer else conn.cursor()

    def _writer_gone(self) -> bool:
        return self._stopping and not self._thread.is_alive()

    def _run_writer(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._commit_lock:
                held: _Outcomes = []
                while pending:
                    group = [pending.popleft()]
                    while pending and len(group) < MAX_GROUP:
                        group.append(pending.popleft())
                    held = self._commit_group(group, held)
                _wake_callers(held)  # nothing left to overlap their wake-up with
            if self._stopping and not pending:
                return

    def _begin(self, conn: Connection) -> float:
        started = time.perf_counter()
        try:
            if conn.in_transaction:  # a failed ROLLBACK left one open: never build on it
                conn.execute("ROLLBACK")
            self._statements.execute("BEGIN IMMEDIATE")
            if conn.data_version() != self._data_version:  # another connection committed
                self.generation += 1
        except apsw.Error as exc:
            raise _domain_error(exc, conn) from exc
        return started

    def _committed(self, conn: Connection, size: int, started: float) -> None:
        try:
            self._data_version = conn.data_version()
        except apsw.Error:  # unknown: the next transaction assumes someone else wrote
            self._data_version = None
        self.last_group_size = size
        if self._listeners:
            elapsed = time.perf_counter() - started
            for listener in self._listeners:
                try:
                    listener(size, elapsed)
                except Exception:  # a listener must never fail a committed write
                    log.exception("commit listener failed")

    def _commit_one(self, fn: Callable[[Connection], T]) -> T:
        """A group of one on the caller's thread, without a job: the same transaction and
        outcomes as :meth:`_commit_group` gives a lone job (``fn``'s own error as it is, a hook
        or COMMIT failure as a storage error), minus the hand-over."""
        conn = self._writer
        started = self._begin(conn)
        ran = False
        try:
            value = fn(conn)
            ran = True
            for hook in self._hooks:
                hook(conn)
            self._statements.execute("COMMIT")
        except BaseException as exc:  # nothing of the transaction survives
            self.generation += 1
            error: BaseException = exc
            if isinstance(exc, apsw.Error):
                error = _domain_error(exc, conn)  # before ROLLBACK resets the OS error
            elif ran and isinstance(exc, Exception) and not isinstance(exc, EvidenceOSError):
                error = StorageError(str(exc))
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if error is exc:
                raise
            raise error from exc
        self._committed(conn, 1, started)
        return value

    def _commit_group(self, group: list[_Job], held: _Outcomes) -> _Outcomes:
        """Commit ``group`` in one transaction; return its outcomes, for the caller to wake.

        ``held`` are the committed outcomes of the previous group. Their callers are woken only
        right before this group's COMMIT (or after HOLD_WAKEUPS_S of its work): a woken caller
        needs the GIL, and this way they take it while the COMMIT's fsync has let go of it,
        instead of taking it from the writer a statement at a time while it runs this group.
        """
        try:
            return self._run_group(group, held)
        finally:
            _wake_callers(held)

    def _run_group(self, group: list[_Job], held: _Outcomes) -> _Outcomes:
        conn = self._writer
        results: _Outcomes = []
        try:
            started = self._begin(conn)
        except EvidenceOSError as exc:
            for job in group:
                job.set_exception(exc)
            return []
        try:
            if len(group) == 1:  # alone in the transaction: no savepoint needed
                ok, value = self._run_alone(conn, group[0].fn)
                if not ok:
                    self.generation += 1
                    group[0].set_exception(value)
                    return []
                results.append((group[0], True, value))
            else:
                deadline = started + HOLD_WAKEUPS_S
                for job in group:
                    if held and time.perf_counter() > deadline:
                        _wake_callers(held)
                    if not job.isolated:
                        results.append((job, True, self._run_unisolated(conn, job.fn)))
                        continue
                    ok, value = self._run_savepoint(conn, job.fn)
                    if not ok:
                        self.generation += 1
                    results.append((job, ok, value))
            with translate_errors(conn):
                for hook in self._hooks:
                    hook(conn)
                _wake_callers(held)
                self._statements.execute("COMMIT")
        except BaseException as exc:  # a hook or COMMIT failed: nothing of the group survives
            self.generation += 1
            with contextlib.suppress(apsw.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, _TransactionLost):
                exc = exc.cause
            error = exc if isinstance(exc, EvidenceOSError) else StorageError(str(exc))
            for job in group:
                if not job.done():
                    job.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return []
        self._committed(conn, len(group), started)
        return results

    @staticmethod
    def _run_alone(conn: Connection, fn: WriteFn) -> tuple[bool, Any]:
        """Run the group's only job without a savepoint; on failure roll the whole transaction
        back (there is nothing else in it to commit)."""
        try:
            with translate_errors(conn):
                return True, fn(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, never lost
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return False, exc

    @staticmethod
    def _run_unisolated(conn: Connection, fn: WriteFn) -> Any:
        try:
            with translate_errors(conn):
                return fn(conn)
        except Exception as exc:
            raise _TransactionLost(exc) from exc

    def _run_savepoint(self, conn: Connection, fn: WriteFn) -> tuple[bool, Any]:
        with translate_errors(conn):
            self._statements.execute("SAVEPOINT job")
        try:
            with translate_errors(conn):
                value = fn(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, never lost
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
        with translate_errors(conn):
            self._statements.execute("RELEASE job")
        return True, value

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A per-thread read-only connection inside one read transaction (one snapshot)."""
        if self._closed:
            raise Unavailable("store is closed")
        local = self._local
        conn: Connection | None = getattr(local, "conn", None)
        if conn is None:
            with translate_errors():
                conn = apsw.Connection(str(self.path))
                _configure(conn, writer=False)
            local.conn, local.statements = conn, conn.cursor()  # a cursor for BEGIN/COMMIT
            with self._readers_lock:
                self._readers.append(conn)
        statements = local.statements
        with translate_errors():
            statements.execute("BEGIN")
            try:
                yield conn
            finally:
                statements.execute("COMMIT")

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Drain queued writes, then close every connection."""
        if self._closed:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()  # the writer drains what was queued before it saw the stop
        self._closed = True
        with self._commit_lock:  # a caller committing on its own thread finishes first
            pass
        while self._pending:  # queued after the writer's last look: never ran, say so
            self._pending.popleft().set_exception(Unavailable("store is closed"))
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
            return _schema_cookie_matches(conn)

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
