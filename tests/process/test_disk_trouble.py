"""Disk trouble under a running daemon: a full disk and a data dir that turns read-only
(DESIGN §2, §3).

Both use real filesystems the test makes, so SQLite meets the real errors: a small ``tmpfs``
filled to ENOSPC by a filler file, and a small ext4 image on a loop device that the kernel
forces read-only (``/sys/fs/ext4/<dev>/trigger_fs_error`` with ``errors=remount-ro``: every write
then fails with EROFS, as after a disk error). Mounting needs root; without it the tests skip.

Expected: mutating RPCs fail with UNAVAILABLE and a message naming the cause, reads keep
working, nothing half-written is left behind (every table as before, exports whole), and once
space returns the same requests succeed without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.claims import (
    RPC_TIMEOUT,
    ClaimClient,
    claim_state,
    db_snapshot,
    rpc_error,
    snapshot_diff,
    start_claims_daemon,
)
from tests.support.daemon import run_ctl
from tests.support.revocation import (
    BIG_BUDGETS,
    claim_request,
    executed_claim,
    get_feed,
    guest,
    revoke,
    sealed_claim,
)

pytestmark = pytest.mark.process


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


def _mount_or_skip(*args: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root (and mount) to make a small filesystem")
    done = _run("mount", *args)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@contextlib.contextmanager
def mounted(target: Path) -> Iterator[Path]:
    try:
        yield target
    finally:
        _run("umount", "-l", str(target))


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem answers ENOSPC; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    written += fh.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return written


def _unavailable(call: Any, *words: str) -> None:
    code, message = rpc_error(call)
    assert code == grpc.StatusCode.UNAVAILABLE, message
    for word in words:
        assert word in message, message
    assert "reads keep working" in message


def _reads_work(client: ClaimClient, executed: bytes) -> None:
    head = client.head()
    assert client.consistency(head.tree_size, head.tree_size).consistent
    fetched = client.fetch(executed)
    assert fetched.signed_tree_head.tree_size == head.tree_size
    get_feed(client.stub)
    assert client.stub.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT).status == "SERVING"


def _exports_whole(data_dir: Path) -> None:
    for name in ("state.json", "accounts.json"):
        path = data_dir / name
        if path.exists():
            json.loads(path.read_text(encoding="utf-8"))
    assert not list(data_dir.glob(".*.tmp")), "a half-written export was left behind"


def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount_or_skip("-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt))
    with mounted(mnt):
        data_dir = mnt / "data"
        daemon = start_claims_daemon(data_dir, env=BIG_BUDGETS)
        try:
            client = ClaimClient.for_daemon(daemon)
            module = guest()
            executed, _ = executed_claim(client, "disk-executed", module)
            sealed = sealed_claim(client, "disk-sealed", module)
            filler = mnt / "filler"
            before = db_snapshot(data_dir)
            assert fill(filler) > 0

            words = ("disk full", "ENOSPC")
            _unavailable(lambda: client.create(claim_request("disk-new"), "disk-create"), *words)
            _unavailable(lambda: client.execute(sealed, "disk-exec"), *words)
            _unavailable(lambda: revoke(client.stub, executed, "disk", "disk-revoke"), *words)
            _reads_work(client, executed)
            assert snapshot_diff(before, db_snapshot(data_dir)) == {}
            assert claim_state(data_dir, sealed) == "SEALED"
            _exports_whole(data_dir)

            filler.unlink()  # space returns: the same requests now succeed, no restart
            assert client.create(claim_request("disk-new"), "disk-create").state == (
                pb.CLAIM_STATE_UNCOMMITTED
            )
            out = client.execute(sealed, "disk-exec")
            assert claim_state(data_dir, sealed) == pb.ClaimState.Name(out.state)[12:]
            assert revoke(client.stub, executed, "disk", "disk-revoke").state == (
                pb.CLAIM_STATE_REVOKED
            )
            assert daemon.terminate() == 0
        finally:
            daemon.kill()
        verify = run_ctl("etl", "verify", "--data-dir", str(data_dir))
        assert verify.returncode == 0, verify.stdout + verify.stderr


def _trigger_read_only(mnt: Path) -> None:
    source = _run("findmnt", "-no", "SOURCE", str(mnt)).stdout.strip()
    knob = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
    if not knob.exists():
        pytest.skip(f"{knob} not available: cannot force the filesystem read-only")
    knob.write_text("evidenceos test: force read-only\n")
    probe = mnt / "probe"
    with pytest.raises(OSError, match="Read-only file system"):
        probe.write_bytes(b"x")


def test_read_only_data_dir_refuses_writes_and_keeps_reads(tmp_path: Path) -> None:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(64 << 20)
    assert _run("mkfs.ext4", "-q", "-F", str(image)).returncode == 0
    mnt = tmp_path / "ext4"
    mnt.mkdir()
    _mount_or_skip("-o", "loop,errors=remount-ro", str(image), str(mnt))
    with mounted(mnt):
        data_dir = mnt / "data"
        daemon = start_claims_daemon(data_dir, env=BIG_BUDGETS)
        try:
            client = ClaimClient.for_daemon(daemon)
            module = guest()
            executed, _ = executed_claim(client, "ro-executed", module)
            sealed = sealed_claim(client, "ro-sealed", module)
            before = db_snapshot(data_dir)
            _trigger_read_only(mnt)

            words = ("read-only", "EROFS")
            _unavailable(lambda: client.create(claim_request("ro-new"), "ro-create"), *words)
            _unavailable(lambda: client.execute(sealed, "ro-exec"), *words)
            _unavailable(lambda: revoke(client.stub, executed, "ro", "ro-revoke"), *words)
            _reads_work(client, executed)
            assert snapshot_diff(before, db_snapshot(data_dir)) == {}
            _exports_whole(data_dir)
            assert daemon.terminate() == 0  # a clean stop even though nothing can be written
        finally:
            daemon.kill()
    # Repair the filesystem as an operator would; the database holds exactly what it held
    # before the failed calls, and those calls now run.
    assert _run("e2fsck", "-fy", str(image)).returncode in (0, 1)
    _mount_or_skip("-o", "loop", str(image), str(mnt))
    with mounted(mnt):
        assert snapshot_diff(before, db_snapshot(data_dir)) == {}
        daemon = start_claims_daemon(data_dir, env=BIG_BUDGETS)
        try:
            client = ClaimClient.for_daemon(daemon)
            assert client.create(claim_request("ro-new"), "ro-create").state == (
                pb.CLAIM_STATE_UNCOMMITTED
            )
            client.execute(sealed, "ro-exec")
            assert claim_state(data_dir, sealed) != "SEALED"
            assert daemon.terminate() == 0
        finally:
            daemon.kill()
        verify = run_ctl("etl", "verify", "--data-dir", str(data_dir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
