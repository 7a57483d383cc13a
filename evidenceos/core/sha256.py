"""SHA-256 for the short inputs of every log append (entries, node pairs, MAC blocks).

``hashlib.sha256`` runs through OpenSSL's EVP layer: fast per byte, but each call first sets up
a context, and right after a commit's fsync wait (caches cold) that set-up costs several
microseconds: three hashes and a MAC added ~9 µs to each ~200 µs durable append.
CPython's own SHA-256 (``_sha256`` up to 3.11, ``_sha2`` from 3.12) has almost no set-up: for
inputs up to :data:`SMALL_INPUT` bytes it is faster cold and a fraction of a microsecond slower
warm. Longer inputs (capsules, files) go to OpenSSL. Both compute the same function; the tests
compare them.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Any


def _builtin() -> Callable[[bytes], Any]:
    for module in ("_sha256", "_sha2"):  # CPython <= 3.11; CPython >= 3.12
        try:
            constructor: Callable[[bytes], Any] = importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
        return constructor
    return hashlib.sha256  # another interpreter: OpenSSL for everything


_builtin_sha256 = _builtin()
_openssl = hashlib.sha256

SMALL_INPUT = 256
"""Longest input hashed by the built-in implementation (warm, OpenSSL wins from ~100 bytes on by
~0.5 µs at 200 bytes; cold, the built-in wins by ~1.5 µs)."""


def digest(data: bytes) -> bytes:
    """``hashlib.sha256(data).digest()``, by whichever implementation is quicker for its size."""
    if len(data) <= SMALL_INPUT:
        small_digest: bytes = _builtin_sha256(data).digest()
        return small_digest
    return _openssl(data).digest()


def small(data: bytes = b"") -> Any:
    """A running SHA-256 for a few short updates (MAC pads: ``copy()`` then ``update()``)."""
    return _builtin_sha256(data)
