"""The store against a real SQLite file: pragmas, migrations, group commit, error mapping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import apsw
import pytest

from evidenceos.errors import AlreadyExists, ConfigError, EvidenceOSError, StorageError
from evidenceos.store.db import (
    APPLICATION_ID,
    DB_FILENAME,
    HOLD_WAKEUPS_S,
    Store,
    _Job,
    load_migrations,
)


def test_pragmas_and_schema_version(data_dir: Path) -> None:
    with Store(data_dir) as store, store.read() as conn:
        assert conn.execute("PRAGMA journal_mode").get == "wal"
        assert conn.execute("PRAGMA foreign_keys").get == 1
        assert conn.execute("PRAGMA synchronous").get == 2  # FULL
        assert conn.execute("PRAGMA query_only").get == 1
        assert conn.execute("PRAGMA user_version").get == len(load_migrations())
        assert conn.execute("PRAGMA application_id").get == APPLICATION_ID


def test_writer_connection_is_full_sync(data_dir: Path) -> None:
    with Store(data_dir) as store:
        assert store.write(lambda c: c.execute("PRAGMA synchronous").get) == 2


def test_newer_schema_is_refused(data_dir: Path) -> None:
    Store(data_dir).close()
    raw = apsw.Connection(str(data_dir / DB_FILENAME))
    raw.execute("PRAGMA user_version=999")
    raw.close()
    with pytest.raises(ConfigError, match="newer than this EvidenceOS supports"):
        Store(data_dir)


def test_foreign_database_is_refused(data_dir: Path) -> None:
    raw = apsw.Connection(str(data_dir / DB_FILENAME))
    raw.execute("PRAGMA application_id=1234; CREATE TABLE x(y)")
    raw.close()
    with pytest.raises(ConfigError, match="not an EvidenceOS database"):
        Store(data_dir)


def test_reopen_applies_no_migration_twice(data_dir: Path) -> None:
    Store(data_dir).close()
    with Store(data_dir) as store, store.read() as conn:
        assert conn.execute("PRAGMA user_version").get == len(load_migrations())


def test_failed_job_rolls_back_alone_and_group_members_commit(data_dir: Path) -> None:
    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(k TEXT PRIMARY KEY) STRICT"))
        barrier = threading.Barrier(9)
        errors: list[BaseException] = []

        def insert(value: str) -> None:
            barrier.wait()
            try:

                def fn(c: apsw.Connection) -> None:
                    c.execute("INSERT INTO t VALUES (?)", (value,))
                    if value == "bad":
                        c.execute("INSERT INTO t VALUES ('dup')")
                        c.execute("INSERT INTO t VALUES ('dup')")

                store.write(fn)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=insert, args=(f"v{i}",)) for i in range(8)]
        threads.append(threading.Thread(target=insert, args=("bad",)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 1
        assert isinstance(errors[0], AlreadyExists)
        with store.read() as conn:
            rows = {r[0] for r in conn.execute("SELECT k FROM t")}
        assert rows == {f"v{i}" for i in range(8)}  # 'bad' and 'dup' rolled back


def test_group_commit_batches_concurrent_writers(data_dir: Path) -> None:
    sizes: list[int] = []
    with Store(data_dir) as store:
        store.add_commit_listener(lambda size, _s: sizes.append(size))
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER) STRICT"))
        barrier = threading.Barrier(32)

        def work(i: int) -> None:
            barrier.wait()
            for _ in range(20):
                store.write(lambda c: c.execute("INSERT INTO t VALUES (?)", (i,)))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with store.read() as conn:
            assert conn.execute("SELECT count(*) FROM t").get == 640
    assert sum(sizes) == 641
    assert max(sizes) > 1, "32 concurrent writers never shared a commit"


def _insert(conn: apsw.Connection, value: int) -> None:
    conn.execute("INSERT INTO t VALUES (?)", (value,))


def test_write_returns_only_after_commit_is_visible_to_readers(data_dir: Path) -> None:
    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER) STRICT"))
        for i in range(50):
            store.write(partial(_insert, value=i))
            with store.read() as conn:
                assert conn.execute("SELECT max(v) FROM t").get == i


def test_apsw_errors_become_domain_errors(data_dir: Path) -> None:
    with Store(data_dir) as store:
        with pytest.raises(StorageError, match="database error"):
            store.write(lambda c: c.execute("SELECT * FROM no_such_table"))
        with pytest.raises(EvidenceOSError), store.read() as conn:
            conn.execute("INSERT INTO meta VALUES ('a', 'b')")  # readers are query_only


def test_close_drains_queued_writes(data_dir: Path) -> None:
    store = Store(data_dir)
    store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER) STRICT"))

    def insert(value: int) -> None:
        store.write(lambda c: c.execute("INSERT INTO t VALUES (?)", (value,)).fetchall())

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    with Store(data_dir) as again, again.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").get == 10


def test_an_idle_writer_commits_on_the_callers_thread(data_dir: Path) -> None:
    with Store(data_dir) as store:
        ran_on = store.write(lambda c: threading.current_thread())
        assert ran_on is threading.current_thread()
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER) STRICT"))
        store.write(partial(_insert, value=1))
        with store.read() as conn:  # committed before write() returned
            assert conn.execute("SELECT count(*) FROM t").get == 1


def _queue_behind_a_held_writer(store: Store, jobs: list[tuple[object, bool]]) -> list[object]:
    """Hold the writer on one thread, queue ``jobs`` (fn, isolated) from others, release: the
    queued jobs then commit as one group on the writer thread. Returns each job's outcome."""
    gate, holding = threading.Event(), threading.Event()

    def hold(_c: apsw.Connection) -> None:
        holding.set()
        gate.wait(10)

    holder = threading.Thread(target=store.write, args=(hold,))
    holder.start()
    assert holding.wait(10)
    outcomes: list[object] = [None] * len(jobs)

    def run(i: int, fn: object, isolated: bool) -> None:
        try:
            outcomes[i] = store.write(fn, isolated=isolated)  # type: ignore[arg-type]
        except EvidenceOSError as exc:
            outcomes[i] = exc

    threads = [
        threading.Thread(target=run, args=(i, fn, isolated))
        for i, (fn, isolated) in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    while len(store._pending) < len(jobs):  # wait until every job queued
        time.sleep(0.01)
    gate.set()
    for t in [holder, *threads]:
        t.join(10)
    return outcomes


def test_a_failing_unisolated_write_fails_its_whole_group(data_dir: Path) -> None:
    sizes: list[int] = []
    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER PRIMARY KEY) STRICT"))
        store.add_commit_listener(lambda size, _s: sizes.append(size))
        outcomes = _queue_behind_a_held_writer(
            store,
            [
                (partial(_insert, value=1), True),
                (partial(_insert, value=1), False),  # duplicate key: cannot fail alone
                (partial(_insert, value=2), True),
            ],
        )
        assert all(isinstance(o, AlreadyExists) for o in outcomes), outcomes
        with store.read() as conn:
            assert conn.execute("SELECT count(*) FROM t").get == 0  # nothing of the group
        assert sizes == [1]  # only the holder committed

        outcomes = _queue_behind_a_held_writer(
            store, [(partial(_insert, value=i), i % 2 == 0) for i in range(6)]
        )
        assert outcomes == [None] * 6
        with store.read() as conn:
            assert conn.execute("SELECT count(*) FROM t").get == 6
        assert sizes[-1] == 6  # one group, savepoints or not


def _jobs(*fns: object) -> list[_Job]:
    return [_Job(fn, True) for fn in fns]  # type: ignore[arg-type]


def test_a_committed_groups_callers_wake_at_the_next_commit_even_if_it_fails(
    data_dir: Path,
) -> None:
    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER PRIMARY KEY) STRICT"))
        first = _jobs(partial(_insert, value=1), partial(_insert, value=2))
        with store._commit_lock:  # drive the writer's steps on this thread
            held = store._commit_group(first, [])
            assert [job.done() for job in first] == [False, False]  # committed, not yet woken
            with store.read() as conn:
                assert conn.execute("SELECT count(*) FROM t").get == 2

            def refuse(_conn: apsw.Connection) -> None:
                raise RuntimeError("hook refuses")

            store.add_pre_commit_hook(refuse)
            second = _jobs(partial(_insert, value=3), partial(_insert, value=4))
            assert store._commit_group(second, held) == []
            store._hooks.remove(refuse)
        assert [job.result() for job in first] == [None, None]
        for job in second:
            with pytest.raises(StorageError, match="hook refuses"):
                job.result()
        with store.read() as conn:
            assert [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")] == [1, 2]


def test_held_callers_wake_once_the_next_group_has_run_for_a_while(data_dir: Path) -> None:
    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER PRIMARY KEY) STRICT"))
        first = _jobs(partial(_insert, value=1))
        seen: list[bool] = []

        def slow(conn: apsw.Connection) -> None:
            time.sleep(2 * HOLD_WAKEUPS_S)
            _insert(conn, 2)

        def look(conn: apsw.Connection) -> None:
            seen.append(first[0].done())
            _insert(conn, 3)

        with store._commit_lock:
            held = store._commit_group(first, [])
            seen.append(first[0].done())
            outcomes = store._commit_group(_jobs(slow, look), held)
        assert seen == [False, True]  # woken during the second group, before its COMMIT
        assert len(outcomes) == 2


def test_the_callers_thread_path_rolls_back_every_kind_of_failure(data_dir: Path) -> None:
    class Stop(BaseException):
        pass

    with Store(data_dir) as store:
        store.write(lambda c: c.execute("CREATE TABLE t(v INTEGER PRIMARY KEY) STRICT"))

        def insert_then(exc: BaseException) -> Callable[[apsw.Connection], None]:
            def fn(conn: apsw.Connection) -> None:
                _insert(conn, 7)
                raise exc

            return fn

        generation = store.generation
        with pytest.raises(ValueError, match="caller's own"):  # the function's error, as it is
            store.write(insert_then(ValueError("caller's own")))
        with pytest.raises(Stop):  # not an Exception: still rolled back, still raised
            store.write(insert_then(Stop()))

        def insert_twice(conn: apsw.Connection) -> None:
            _insert(conn, 1)
            _insert(conn, 1)

        with pytest.raises(AlreadyExists):  # apsw's error, translated
            store.write(insert_twice)

        def refuse(_conn: apsw.Connection) -> None:
            raise RuntimeError("hook refuses")

        store.add_pre_commit_hook(refuse)
        with pytest.raises(StorageError, match="hook refuses"):  # after the function ran
            store.write(partial(_insert, value=8))
        store._hooks.remove(refuse)
        assert store.generation == generation + 4  # every rollback invalidates write caches
        store.write(partial(_insert, value=9))  # the connection is usable again
        with store.read() as conn:
            assert [r[0] for r in conn.execute("SELECT v FROM t")] == [9]
