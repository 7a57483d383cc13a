"""Build data directories without a daemon: the service layer writes the log directly.

Process tests use this to give a daemon (or ``evidenceosctl``) a log with known contents before it
starts. Entries are ``{"kind": "test", "i": i}``; :func:`entry_payload` rebuilds their canonical
bytes with plain ``json`` so tests can check leaf hashes against bytes the package did not make.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from evidenceos.service.log_service import LogService
from evidenceos.store.db import Store
from evidenceos.store.keys import load_keyring


def entry_payload(i: int) -> bytes:
    """RFC 8785 bytes of ``{"kind": "test", "i": i}`` (sorted keys, no spaces)."""
    return json.dumps({"kind": "test", "i": i}, sort_keys=True, separators=(",", ":")).encode()


def append_entries(data_dir: Path, indices: Iterable[int]) -> int:
    """Append ``{"kind": "test", "i": i}`` for each index while no daemon runs (generating the
    first signing key on a fresh dir); returns the tree size afterwards."""
    store = Store(data_dir)
    try:
        service = LogService(store, load_keyring(data_dir, allow_generate=True))
        service.start()
        for i in indices:
            service.append_entry({"kind": "test", "i": i})
        service.close()  # as a daemon's clean stop: every leaf under a signed head
        return service.tree_size()
    finally:
        store.close()


def frame(payload: bytes) -> bytes:
    """One ``etl.log`` record in the reference framing (spec 40 §1.1), built from the spec."""
    header = struct.pack("<I", len(payload))
    return header + payload + struct.pack("<I", zlib.crc32(header + payload))
