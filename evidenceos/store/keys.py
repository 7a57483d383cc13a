"""ETL signing keys under ``<data-dir>/keys/`` (spec 40 §4, DESIGN §4).

``keys/<key_id_hex>.key`` holds a raw 32-byte Ed25519 seed, owner-only mode;
``keys/active_key_id`` names the key that signs new heads. The daemon only writes here when it
generates the first key of a fresh data dir; ``evidenceosctl keys rotate`` adds keys. Seeds never
enter the database or the logs.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidenceos.core.leafmac import leaf_mac_key
from evidenceos.core.sth import compute_key_id, private_key_from_seed, public_key_bytes
from evidenceos.errors import KeyFileError
from evidenceos.ids import KeyId
from evidenceos.store.files import atomic_write, fsync_dir

KEYS_DIR = "keys"
ACTIVE_FILE = "active_key_id"
LEGACY_FILE = "etl_signing_ed25519"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Keyring:
    """Every ETL key found in ``keys/``; ``active_key_id`` signs new heads."""

    active_key_id: KeyId
    private_keys: dict[KeyId, Ed25519PrivateKey] = field(repr=False)
    public_keys: dict[KeyId, bytes]

    @property
    def active_private_key(self) -> Ed25519PrivateKey:
        return self.private_keys[self.active_key_id]

    @property
    def active_public_key(self) -> bytes:
        return self.public_keys[self.active_key_id]

    def leaf_mac_keys(self) -> dict[KeyId, bytes]:
        """The leaf-MAC key of every signing key (core.leafmac), derived from its seed."""
        return {
            key_id: leaf_mac_key(private.private_bytes_raw())
            for key_id, private in self.private_keys.items()
        }


def _read_seed(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: signing key permissions are too broad ({stat.filemode(mode)}); "
            f"require 0600 or stricter: chmod 600 {path}"
        )
    seed = path.read_bytes()
    if len(seed) != 32:
        raise KeyFileError(
            f"{path}: invalid signing key length {len(seed)} bytes; a key file holds the raw "
            "32-byte Ed25519 seed"
        )
    return seed


def _load_files(keys_dir: Path) -> dict[KeyId, Ed25519PrivateKey]:
    found: dict[KeyId, Ed25519PrivateKey] = {}
    for path in sorted(keys_dir.iterdir()):
        if path.name in (ACTIVE_FILE, LEGACY_FILE) or not path.is_file():
            continue
        stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
        if not re.fullmatch(r"[0-9a-fA-F]+", stem):
            continue  # README and other notes
        if not _HEX64.fullmatch(stem):
            raise KeyFileError(
                f"{path}: key file names must be the 64-hex-digit lowercase key id "
                "(SHA-256 of the public key) followed by .key"
            )
        key = private_key_from_seed(_read_seed(path))
        key_id = compute_key_id(public_key_bytes(key))
        if key_id.hex() != stem:
            raise KeyFileError(
                f"{path}: key_id does not match signing key (the seed's key id is {key_id.hex()})"
            )
        found[key_id] = key
    legacy = keys_dir / LEGACY_FILE
    if legacy.is_file():
        key = private_key_from_seed(_read_seed(legacy))
        found.setdefault(compute_key_id(public_key_bytes(key)), key)
    return found


def write_key_file(keys_dir: Path, key: Ed25519PrivateKey) -> KeyId:
    """Write a new key file (0600, exclusive create, fsynced) and return its key id."""
    from cryptography.hazmat.primitives import serialization

    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    key_id = compute_key_id(public_key_bytes(key))
    path = keys_dir / f"{key_id.hex()}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(keys_dir)
    return key_id


def write_active_key_id(keys_dir: Path, key_id: KeyId) -> None:
    atomic_write(keys_dir / ACTIVE_FILE, f"{key_id.hex()}\n".encode(), mode=0o600)


def load_keyring(data_dir: Path, *, allow_generate: bool) -> Keyring:
    """Load ``keys/``; generate a first key only when ``allow_generate`` (a fresh data dir)."""
    keys_dir = data_dir / KEYS_DIR
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = _load_files(keys_dir)
    active_path = keys_dir / ACTIVE_FILE
    if not keys:
        if not allow_generate:
            raise KeyFileError(
                f"{keys_dir} holds no signing key, but this data dir already has signed tree "
                "heads; restore the key files from backup (keys/<key_id_hex>.key)"
            )
        key = Ed25519PrivateKey.generate()
        key_id = write_key_file(keys_dir, key)
        write_active_key_id(keys_dir, key_id)
        keys = {key_id: key}
    if active_path.exists():
        text = active_path.read_text(encoding="ascii", errors="replace").strip().lower()
        if not _HEX64.fullmatch(text):
            raise KeyFileError(f"{active_path}: invalid active key id {text[:80]!r}")
        active = KeyId(bytes.fromhex(text))
        if active not in keys:
            raise KeyFileError(
                f"{active_path}: active key id {text} not found in keyring; add "
                f"{keys_dir}/{text}.key or correct {active_path}"
            )
    elif len(keys) == 1:
        active = next(iter(keys))
    else:
        ids = ", ".join(sorted(k.hex() for k in keys))
        raise KeyFileError(
            f"{keys_dir} holds {len(keys)} signing keys ({ids}) and no active key id; write the "
            f"key id that should sign new heads into {active_path}"
        )
    return Keyring(
        active_key_id=active,
        private_keys=keys,
        public_keys={kid: public_key_bytes(k) for kid, k in keys.items()},
    )


def rotate_key(data_dir: Path) -> KeyId:
    """Generate a new key, keep the old ones, and make the new one active."""
    keys_dir = data_dir / KEYS_DIR
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_id = write_key_file(keys_dir, Ed25519PrivateKey.generate())
    write_active_key_id(keys_dir, key_id)
    return key_id
