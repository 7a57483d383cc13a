"""Crash-safe file writes for exported views and key material (DESIGN §2).

A reader sees the old file or the new one, never a torn one: write a temp file in the same
directory, fsync it, rename it over the target, fsync the directory. The temp file of ``x`` is
``.x.tmp``; a crash leaves at most that one file, which the next write of ``x`` truncates (and
:func:`remove_stale_temp` deletes). A published file is never written again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

COPY_CHUNK: Final = 1 << 20
"""Bytes per ``copy_file_range`` call and per read/write of the fallback copy."""

# ioctl_ficlone(2): _IOW(0x94, 9, int). ``fcntl.FICLONE`` only exists from Python 3.12.
_FICLONE: Final[int] = int(getattr(fcntl, "FICLONE", 0x40049409))
# Errors that mean "this way of copying is not available here" (try the next one), as opposed
# to a real failure of the disk (ENOSPC, EDQUOT, EIO, ...), which is raised.
_UNSUPPORTED: Final = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
    | {errno.EBADF, errno.EPERM, errno.ETXTBSY}
)
COPY_METHODS: Final = ("clone", "copy_file_range", "chunks")


class ShortCopyError(OSError):
    """The source ended before the requested prefix length (it shrank under the copy)."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Where a new version of ``path`` is built before it is renamed over ``path``."""
    return path.with_name(f".{path.name}.tmp")


def remove_stale_temp(path: Path) -> bool:
    """Delete the temp file an interrupted write of ``path`` left behind; True if there was one.

    Only call this while no other writer of ``path`` can be running (the exporter holds
    ``.export.lock``)."""
    try:
        temp_path(path).unlink()
    except FileNotFoundError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class AtomicFile:
    """A new version of ``path``, published whole or not at all.

    Used as a context manager: ``fd`` is an empty temp file in the same directory; a normal exit
    fsyncs it, renames it over ``path`` and fsyncs the directory (``stat`` is then the published
    inode's status, taken after the rename); an exception deletes the temp file instead. Nothing
    ever writes to the published file afterwards."""

    def __init__(self, path: Path, *, mode: int = 0o644) -> None:
        self.path = path
        self.temp = temp_path(path)
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        self.stat: os.stat_result | None = None

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)

    def commit(self) -> os.stat_result:
        """fsync, rename over ``path``, fsync the directory; return the published inode's
        status (taken after the rename). On failure the temp file is deleted."""
        try:
            try:
                os.fsync(self.fd)
                os.replace(self.temp, self.path)
                self.stat = os.fstat(self.fd)
            finally:
                os.close(self.fd)
            fsync_dir(self.path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                self.temp.unlink()  # already gone if the rename happened
            raise
        return self.stat

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self.temp.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.commit()


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    atomic_write_chunks(path, (data,), mode=mode)


def atomic_write_chunks(path: Path, chunks: Iterable[bytes], *, mode: int = 0o644) -> None:
    """As :func:`atomic_write`, streaming the content so large views never sit in memory."""
    with AtomicFile(path, mode=mode) as out:
        for chunk in chunks:
            out.write(chunk)


# -- copying a prefix in the kernel ------------------------------------------------------------


def _clone(src: int, dst: int, length: int) -> bool:
    """Share the source's blocks (reflink: btrfs, XFS, bcachefs, ...); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(dst, _FICLONE, src)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        os.ftruncate(dst, 0)  # a refused clone leaves nothing, but be sure
        return False
    if os.fstat(dst).st_size < length:
        raise ShortCopyError(errno.EIO, f"source holds fewer than {length} bytes")
    os.ftruncate(dst, length)
    return True


def _copy_file_range(src: int, dst: int, start: int, length: int) -> int:
    """Copy in the kernel from ``start``; returns where it stopped (``length`` when done)."""
    offset = start
    while offset < length:
        try:
            copied = os.copy_file_range(
                src, dst, min(COPY_CHUNK, length - offset), offset_src=offset, offset_dst=offset
            )
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            break
        if copied == 0:
            break  # end of source, or a filesystem that copies nothing: let the fallback decide
        offset += copied
    return offset


def _copy_chunks(src: int, dst: int, start: int, length: int) -> None:
    offset = start
    while offset < length:
        data = os.pread(src, min(COPY_CHUNK, length - offset), offset)
        if not data:
            raise ShortCopyError(errno.EIO, f"source ended at byte {offset}, expected {length}")
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, offset)
            view = view[written:]
            offset += written


def copy_prefix(src: int, dst: int, length: int, *, methods: Iterable[str] = COPY_METHODS) -> str:
    """Make the empty file ``dst`` hold the first ``length`` bytes of ``src``; return the method.

    Tries, in order, a reflink (``FICLONE``, then truncate to ``length``), ``copy_file_range``
    (the kernel copies; no data passes through this process) and ``pread``/``pwrite`` in
    ``COPY_CHUNK`` pieces; a method that is not supported here falls through to the next. Leaves
    ``dst``'s offset at ``length``. :class:`ShortCopyError` if ``src`` is shorter than
    ``length``."""
    allowed = tuple(methods)
    unknown = set(allowed) - set(COPY_METHODS)
    if unknown or not allowed:
        raise ValueError(f"unknown copy methods {sorted(unknown)} (known: {COPY_METHODS})")
    used = "none"
    if length == 0:
        pass
    elif "clone" in allowed and _clone(src, dst, length):
        used = "clone"
    else:
        done = 0
        if "copy_file_range" in allowed:
            done = _copy_file_range(src, dst, 0, length)
            used = "copy_file_range"
        if done < length:
            if "chunks" not in allowed:
                raise ShortCopyError(errno.EIO, f"copied {done} of {length} bytes")
            _copy_chunks(src, dst, done, length)
            used = "chunks" if done == 0 else f"{used}+chunks"
    os.lseek(dst, length, os.SEEK_SET)
    return used


@contextlib.contextmanager
def open_for_copy(path: Path) -> Iterator[int | None]:
    """A read-only fd on ``path`` (``None`` if it does not exist), closed afterwards."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
