"""etl.log is only ever replaced whole (D-RV7): a new file is built next to it — the verified
prefix copied in the kernel, the missing records streamed from the database in batches — fsynced
and renamed over the old one. Real files, real SQLite, a real SIGKILL; no filesystem mocks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evidenceos.store import log as log_table
from evidenceos.store.db import Store
from evidenceos.store.export import (
    ETL_BATCH_BYTES,
    ETL_REFRESH_FACTOR,
    Exporter,
    ExportScheduler,
    etl_refresh_due_at,
)
from evidenceos.store.files import (
    COPY_METHODS,
    AtomicFile,
    ShortCopyError,
    copy_prefix,
    temp_path,
)
from tests.support.paths import REPO_ROOT

MIRROR = "etl.log"


def _frame(payload: bytes) -> bytes:
    head = struct.pack("<I", len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def _payload(i: int, pad: int) -> bytes:
    return json.dumps({"i": i, "kind": "test", "pad": "x" * pad}, sort_keys=True).encode()


def _append(store: Store, count: int, *, pad: int = 40) -> None:
    """Append ``count`` leaves in one transaction (the log table's own append path)."""

    def add(conn: object) -> None:
        start = log_table.tree_size(conn)  # type: ignore[arg-type]
        for i in range(start, start + count):
            log_table.append_leaf(conn, "test", _payload(i, pad), 0)  # type: ignore[arg-type]

    store.write(add)


def _expected(store: Store) -> bytes:
    """The whole log in the reference framing, built here with struct + zlib."""
    with store.read() as conn:
        rows = conn.execute("SELECT payload FROM log_leaves ORDER BY leaf_index").fetchall()
    payloads = [payload for (payload,) in rows if isinstance(payload, bytes)]
    assert len(payloads) == len(rows)
    return b"".join(_frame(payload) for payload in payloads)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size + 1, 0)
    assert len(data) == size
    return data


def _marker(store: Store) -> object:
    with store.read() as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'etl_log_mirror'").get


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    with Store(data_dir) as opened:
        yield opened


@pytest.fixture
def exporter(store: Store, data_dir: Path) -> Exporter:
    return Exporter(store, data_dir)


@pytest.fixture
def commits(store: Store) -> list[int]:
    """One entry per committed write group from now on."""
    seen: list[int] = []
    store.add_commit_listener(lambda size, _secs: seen.append(size))
    return seen


# -- replaced by rename, never written in place ------------------------------------------------


def test_every_refresh_is_a_new_inode_and_old_readers_keep_their_bytes(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    path = data_dir / MIRROR
    held: list[tuple[int, bytes, os.stat_result]] = []
    try:
        _append(store, 5)
        for round_ in range(4):
            result = exporter.export_etl_log()
            assert result.published
            assert path.read_bytes() == _expected(store)
            fd = os.open(path, os.O_RDONLY)
            st = os.fstat(fd)
            assert all(st.st_ino != old.st_ino for _, _, old in held), "inode reused"
            held.append((fd, _read_fd(fd), st))
            _append(store, 3 + round_ * 1000)  # the last rounds cross a batch boundary
        exporter.export_etl_log()
        assert path.read_bytes() == _expected(store)
        # No published file was ever written again: same bytes, size and mtime for every reader.
        for fd, content, st in held:
            now = os.fstat(fd)
            assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
            assert _read_fd(fd) == content
    finally:
        for fd, _, _ in held:
            os.close(fd)


def test_refresh_keeps_the_prefix_and_adds_the_tail(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    _append(store, 7)
    first = exporter.export_etl_log()
    assert (first.rewritten, first.kept, first.appended, first.copy_method) == (True, 0, 7, None)
    _append(store, 2)
    second = exporter.export_etl_log()
    assert (second.rewritten, second.kept, second.appended, second.leaves) == (False, 7, 2, 9)
    assert second.copy_method is not None
    assert second.copy_method.split("+")[0] in COPY_METHODS
    assert (data_dir / MIRROR).read_bytes() == _expected(store)


def test_up_to_date_mirror_is_left_alone_and_marker_not_rewritten(
    store: Store, exporter: Exporter, data_dir: Path, commits: list[int]
) -> None:
    _append(store, 4)
    exporter.export_etl_log()
    before = os.stat(data_dir / MIRROR)
    commits.clear()
    again = exporter.export_etl_log()
    assert (again.published, again.appended, again.kept) == (False, 0, 4)
    assert os.stat(data_dir / MIRROR).st_ino == before.st_ino
    assert commits == [], "an export with nothing to do must not commit (it would re-trigger)"


def test_big_append_batch_equals_the_framed_log(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    _append(store, 10)
    exporter.export_etl_log()
    _append(store, 9000, pad=200)  # > 2 record batches and > 1 byte batch
    result = exporter.export_etl_log()
    assert (result.kept, result.appended, result.leaves) == (10, 9000, 9010)
    assert (data_dir / MIRROR).read_bytes() == _expected(store)
    assert not temp_path(data_dir / MIRROR).exists()


def test_missing_mirror_is_rebuilt_whole(store: Store, exporter: Exporter, data_dir: Path) -> None:
    _append(store, 6)
    exporter.export_etl_log()
    (data_dir / MIRROR).unlink()
    result = exporter.export_etl_log()
    assert (result.rewritten, result.kept, result.appended) == (True, 0, 6)
    assert (data_dir / MIRROR).read_bytes() == _expected(store)


def test_first_rewrite_streams_with_memory_of_one_batch(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    _append(store, 12_000, pad=2000)  # ~24 MB of framed records
    expected_size = len(_expected(store))
    assert expected_size > 20 * ETL_BATCH_BYTES
    tracemalloc.start()
    try:
        result = exporter.export_etl_log()
        _, rewrite_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _append(store, 10, pad=2000)
        tracemalloc.reset_peak()
        exporter.export_etl_log(full_check=True)  # re-reads the whole file record by record
        _, verify_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.appended == 12_000
    assert (data_dir / MIRROR).stat().st_size > expected_size
    # One batch is ~1 MiB (plus its join); the whole log would be 24 MB.
    assert rewrite_peak < 4 * ETL_BATCH_BYTES, rewrite_peak
    assert verify_peak < 4 * ETL_BATCH_BYTES, verify_peak
    assert (data_dir / MIRROR).read_bytes() == _expected(store)


# -- damaged, replaced or edited mirrors ------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        (lambda b: b + b"\x01\x02\x03", 5),
        (lambda b: b + struct.pack("<I", 1 << 31) + b"huge length", 5),
        (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], 0),
        (lambda b: b[: len(b) // 2], 2),
        (lambda b: b"", 0),
    ],
    ids=["trailing-bytes", "absurd-length", "flipped-bit", "truncated", "emptied"],
)
def test_damaged_mirror_keeps_only_its_verified_prefix(
    store: Store,
    exporter: Exporter,
    data_dir: Path,
    damage: Callable[[bytes], bytes],
    kept: int,
) -> None:
    _append(store, 5)
    path = data_dir / MIRROR
    exporter.export_etl_log()
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)  # an operator's in-place edit
    reader = os.open(path, os.O_RDONLY)
    try:
        result = exporter.export_etl_log(full_check=True)
        assert _read_fd(reader) == damaged, "the damaged inode must not be repaired in place"
    finally:
        os.close(reader)
    assert result.published and result.kept == kept
    # An emptied file is a valid (empty) prefix; anything else differs at the first kept index.
    assert result.first_difference == (None if damaged == b"" else kept)
    assert result.rewritten is (damaged != b"")
    assert path.read_bytes() == _expected(store)


def test_in_place_edit_of_same_size_is_noticed_without_full_check(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    """Shutdown trusts ``meta.etl_log_mirror``; the marker names the inode and its ctime, so even
    an edit that keeps the size makes the export re-read the file."""
    _append(store, 5)
    path = data_dir / MIRROR
    exporter.export_etl_log()
    published = path.stat()
    time.sleep(0.02)  # past the filesystem's timestamp granularity
    with path.open("r+b") as fh:
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 0x20]))
    assert path.stat().st_size == published.st_size
    assert path.stat().st_ctime_ns != published.st_ctime_ns
    result = exporter.export_etl_log()  # full_check=False, as at shutdown
    assert result.first_difference is not None and result.published
    assert path.read_bytes() == _expected(store)


def test_identical_copy_put_in_place_is_verified_not_rebuilt(
    store: Store, exporter: Exporter, data_dir: Path, commits: list[int]
) -> None:
    _append(store, 5)
    path = data_dir / MIRROR
    exporter.export_etl_log()
    copy = data_dir / "restored"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # e.g. restored from a backup: new inode, same bytes
    inode = path.stat().st_ino
    commits.clear()
    result = exporter.export_etl_log()
    assert (result.published, result.first_difference, result.kept) == (False, None, 5)
    assert path.stat().st_ino == inode
    assert len(commits) == 1, "the marker now names the restored inode"
    commits.clear()
    exporter.export_etl_log()
    assert commits == []


def test_older_marker_format_is_verified_once(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    _append(store, 3)
    exporter.export_etl_log()
    size = (data_dir / MIRROR).stat().st_size
    store.write(
        lambda conn: conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'etl_log_mirror'", (f"3:{size}",)
        )
    )
    result = exporter.export_etl_log()
    assert (result.published, result.kept) == (False, 3)
    marker = _marker(store)
    assert isinstance(marker, str)
    assert marker.split(":")[:2] == ["3", str(size)] and len(marker.split(":")) == 4


# -- crashes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("up_to_date", [False, True], ids=["behind", "up-to-date"])
def test_stale_temp_file_is_removed_and_ignored(
    store: Store, exporter: Exporter, data_dir: Path, up_to_date: bool
) -> None:
    _append(store, 5)
    exporter.export_etl_log()
    if not up_to_date:
        _append(store, 4)
    stale = temp_path(data_dir / MIRROR)
    # What a crash mid-rewrite leaves: a copied prefix, a torn record, and more than the result.
    stale.write_bytes((data_dir / MIRROR).read_bytes() + b"\xff" * 100_000)
    result = exporter.export_etl_log()
    assert not stale.exists()
    assert result.published is not up_to_date
    assert (data_dir / MIRROR).read_bytes() == _expected(store)


_CHILD = """
import sys
from pathlib import Path
from evidenceos.store.db import Store
from evidenceos.store.export import Exporter
data_dir = Path(sys.argv[1])
store = Store(data_dir)
Exporter(store, data_dir).export_etl_log()
store.close()
"""


def test_sigkill_mid_rewrite_leaves_the_old_file_whole(
    store: Store, exporter: Exporter, data_dir: Path
) -> None:
    """A real exporter process is SIGKILLed while its temp file is being filled: readers still
    see the old file (same inode, same bytes), and the next export cleans up and catches up."""
    path = data_dir / MIRROR
    temp = temp_path(path)
    _append(store, 2000, pad=1000)
    exporter.export_etl_log()
    old = path.read_bytes()
    old_inode = path.stat().st_ino
    _append(store, 30_000, pad=1000)  # ~30 MB to stream: a window of tens of milliseconds
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)], cwd=REPO_ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        caught = False
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if temp.stat().st_size > len(old):  # prefix copied, records being streamed
                    child.send_signal(signal.SIGKILL)
                    caught = True
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.0002)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if not caught:
        errors = child.stderr.read().decode() if child.stderr is not None else ""
        pytest.fail(
            f"the exporter ended before it could be killed (rc {child.returncode}) {errors}"
        )
    assert child.returncode == -signal.SIGKILL
    assert path.stat().st_ino == old_inode
    assert path.read_bytes() == old
    assert temp.exists(), "the crash should have left the temp file behind"

    result = exporter.export_etl_log()
    assert not temp.exists()
    assert (result.kept, result.appended) == (2000, 30_000)
    assert path.read_bytes() == _expected(store)


def _mount_tmpfs_or_skip(target: Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def test_refresh_without_room_for_a_second_copy_keeps_the_old_file(
    store: Store, tmp_path: Path
) -> None:
    """A refresh needs space for old + new file: on ENOSPC the old file stays, the temp goes."""
    views = tmp_path / "views"
    views.mkdir()
    _mount_tmpfs_or_skip(views, "4m")
    try:
        exporter = Exporter(store, views)  # the database stays on the normal disk
        _append(store, 1500, pad=1000)  # ~1.5 MB framed
        exporter.export_etl_log()
        path = views / MIRROR
        old, inode = path.read_bytes(), path.stat().st_ino
        filler = views / "filler"
        with filler.open("wb") as fh:
            fh.write(b"\0" * (4 * 1024 * 1024 - 2 * len(old) + 200_000))
        _append(store, 300, pad=1000)
        with pytest.raises(OSError, match="No space left") as failed:
            exporter.export_etl_log()
        assert failed.value.errno == errno.ENOSPC
        assert (path.read_bytes(), path.stat().st_ino) == (old, inode)
        assert not temp_path(path).exists()
        filler.unlink()
        result = exporter.export_etl_log()
        assert (result.kept, result.appended) == (1500, 300)
        assert path.read_bytes() == _expected(store)
    finally:
        subprocess.run(["umount", "-l", str(views)], check=False)


# -- files.copy_prefix and AtomicFile ---------------------------------------------------------


@pytest.mark.parametrize(
    "methods",
    [("chunks",), ("copy_file_range",), ("copy_file_range", "chunks"), COPY_METHODS],
    ids=["chunks", "copy_file_range", "copy_file_range+chunks", "default"],
)
@pytest.mark.parametrize("length", [0, 1, 3 << 20, (3 << 20) + 12_345])
def test_copy_prefix_copies_exactly_the_prefix(
    tmp_path: Path, methods: tuple[str, ...], length: int
) -> None:
    source = tmp_path / "source"
    content = os.urandom((3 << 20) + 12_345)
    source.write_bytes(content)
    target = tmp_path / "target"
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        used = copy_prefix(src, dst, length, methods=methods)
        assert os.lseek(dst, 0, os.SEEK_CUR) == length
        os.write(dst, b"tail")
    finally:
        os.close(src)
        os.close(dst)
    assert target.read_bytes() == content[:length] + b"tail"
    assert source.read_bytes() == content
    if length == 0:
        assert used == "none"
    elif methods == ("chunks",):
        assert used == "chunks"
    else:
        assert used.split("+")[0] in methods


@pytest.mark.parametrize("methods", [("chunks",), COPY_METHODS])
def test_copy_prefix_of_a_shorter_source_fails(tmp_path: Path, methods: tuple[str, ...]) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x" * 1000)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(ShortCopyError):
            copy_prefix(src, dst, 1001, methods=methods)
    finally:
        os.close(src)
        os.close(dst)


def test_atomic_file_failure_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "view"
    target.write_bytes(b"old")
    inode = target.stat().st_ino

    def crash_while_writing() -> None:
        with AtomicFile(target) as half:
            half.write(b"new, half")
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        crash_while_writing()
    assert (target.read_bytes(), target.stat().st_ino) == (b"old", inode)
    assert not temp_path(target).exists()
    with AtomicFile(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new"
    assert out.stat is not None and out.stat.st_ino == target.stat().st_ino != inode


# -- the adaptive etl.log schedule ------------------------------------------------------------


def test_refresh_due_at_is_factor_times_last_rewrite() -> None:
    assert etl_refresh_due_at(None, 5.0) == float("-inf")  # never rewritten: due now
    assert etl_refresh_due_at(100.0, 2.0) == 100.0 + ETL_REFRESH_FACTOR * 2.0
    assert etl_refresh_due_at(100.0, 2.0, factor=3.0) == 106.0
    assert etl_refresh_due_at(100.0, 0.0) == 100.0
    assert ETL_REFRESH_FACTOR >= 9  # duty cycle <= 10%


@pytest.mark.parametrize("rewrite_seconds", [0.01, 0.5, 7.0, 120.0])
def test_refresh_schedule_bounds_the_duty_cycle(rewrite_seconds: float) -> None:
    """Simulated: changes arrive continuously and every rewrite takes ``rewrite_seconds``."""
    now, busy, last_end = 0.0, 0.0, None
    while now < 10_000 * rewrite_seconds:
        now = max(now, etl_refresh_due_at(last_end, rewrite_seconds))
        now += rewrite_seconds
        busy += rewrite_seconds
        last_end = now
    horizon = etl_refresh_due_at(last_end, rewrite_seconds)  # count the last wait too
    assert busy / horizon <= 1 / (1 + ETL_REFRESH_FACTOR) + 1e-9


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _exported_size(data_dir: Path) -> int | None:
    """The tree size a background export_all put into state.json (``probe`` section)."""
    try:
        return int(json.loads((data_dir / "state.json").read_text())["probe"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


@pytest.fixture
def probed(exporter: Exporter) -> Exporter:
    exporter.state_sections["probe"] = log_table.tree_size
    return exporter


def test_scheduler_defers_etl_log_but_not_other_views(
    store: Store, probed: Exporter, data_dir: Path
) -> None:
    """A huge factor stands for a huge log: after the first rewrite, background exports leave
    etl.log alone until forced; state.json still follows every change."""
    path = data_dir / MIRROR
    _append(store, 3)
    scheduler = ExportScheduler(probed, 0.0, 0.0, etl_refresh_factor=1e9)
    try:
        scheduler.request()  # never rewritten: included
        _wait_for(lambda: _exported_size(data_dir) == 3)
        assert path.read_bytes() == _expected(store)
        published, inode = path.read_bytes(), path.stat().st_ino
        _append(store, 2)
        scheduler.request()
        _wait_for(lambda: _exported_size(data_dir) == 5)
        assert (path.read_bytes(), path.stat().st_ino) == (published, inode), "not due yet"
        scheduler.request(full=True)  # e.g. SIGHUP
        _wait_for(lambda: path.read_bytes() == _expected(store))
    finally:
        scheduler.stop()


def test_shutdown_export_brings_a_deferred_etl_log_up_to_date(
    store: Store, probed: Exporter, data_dir: Path
) -> None:
    _append(store, 3)
    scheduler = ExportScheduler(probed, 0.0, 0.0, etl_refresh_factor=1e9)
    try:
        scheduler.request()
        _wait_for(lambda: _exported_size(data_dir) == 3)
        _append(store, 4)
        scheduler.request()
        _wait_for(lambda: _exported_size(data_dir) == 7)
        assert (data_dir / MIRROR).read_bytes() != _expected(store)
    finally:
        scheduler.stop()
    probed.export_all()  # what Daemon.stop does after scheduler.stop()
    assert (data_dir / MIRROR).read_bytes() == _expected(store)
    assert not temp_path(data_dir / MIRROR).exists()


def test_scheduler_timer_catches_etl_log_up_without_more_changes(
    store: Store, probed: Exporter, data_dir: Path
) -> None:
    path = data_dir / MIRROR
    _append(store, 3)
    scheduler = ExportScheduler(probed, 0.0, 0.0)
    try:
        scheduler.request()
        _wait_for(lambda: scheduler.etl_due_at() > float("-inf"))
        # Pretend the last rewrite took 0.1 s: the next one is due 1 s after it ended.
        scheduler._etl_last_seconds = 0.1  # the only knob a test needs
        scheduler._etl_last_end = time.monotonic()
        _append(store, 4)
        scheduler.request()  # the one and only request: the timer does the rest
        started = time.monotonic()
        _wait_for(lambda: _exported_size(data_dir) == 7)
        assert path.read_bytes() != _expected(store)
        _wait_for(lambda: path.read_bytes() == _expected(store))
        waited = time.monotonic() - started
        assert waited >= 0.6, f"etl.log refreshed after {waited:.2f} s, before it was due"
    finally:
        scheduler.stop()
