"""The holdout registry under ``<data-dir>/holdouts/`` (spec 30 §6, spec 20 §3.4 step 8).

``holdouts/<holdout_ref>/`` holds ``manifest.json`` and the labels: ``labels.enc`` (AES-256-GCM,
key from ``EVIDENCEOS_HOLDOUT_KEY_<ID>``) or, in development only, a plaintext ``labels.bin``.
The directory must be mode 0700 and the label file 0600, exactly. Operators create entries with
``evidenceosctl holdout encrypt --ref`` (:func:`write_encrypted_holdout`); the daemon only reads.

With the insecure synthetic provider on, the registry is not consulted at all: only refs that
start with ``synthetic-`` resolve, to labels derived from the ref (as in the reference).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evidenceos.core.holdout import (
    LABELS_ENC_HEADER_LEN,
    MAX_HOLDOUT_LEN,
    Holdout,
    HoldoutCryptoError,
    HoldoutDescriptor,
    HoldoutManifest,
    decode_labels_enc,
    encode_labels_enc,
    key_env_var,
    key_from_env,
    parse_key_hex,
    synthetic_holdout,
    validate_holdout_labels,
    validate_holdout_ref,
)
from evidenceos.errors import (
    AlreadyExists,
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
)
from evidenceos.store.files import atomic_write, fsync_dir

__all__ = [
    "DIR_MODE",
    "HOLDOUTS_DIR",
    "LABELS_BIN",
    "LABELS_ENC",
    "LABEL_FILE_MODE",
    "MANIFEST",
    "HoldoutRegistry",
    "load_key_file",
    "seal_labels",
    "write_encrypted_holdout",
    "write_label_file",
]

HOLDOUTS_DIR = "holdouts"
MANIFEST = "manifest.json"
LABELS_ENC = "labels.enc"
LABELS_BIN = "labels.bin"
DIR_MODE = 0o700
LABEL_FILE_MODE = 0o600

#: Longest label file worth reading: a 4096-label payload plus header and tag, plus one byte so
#: that an oversized file is reported as a length mismatch instead of being read whole.
_MAX_LABEL_FILE_BYTES = MAX_HOLDOUT_LEN + LABELS_ENC_HEADER_LEN + 16 + 1
_MAX_MANIFEST_BYTES = 64 * 1024

_StatSig = tuple[int, int, int, int]


def _stat_sig(st: os.stat_result) -> _StatSig:
    # A rewrite through atomic_write changes the inode; an in-place edit changes size or mtime.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class _CacheEntry:
    manifest: _StatSig
    labels: _StatSig
    key_fingerprint: bytes
    holdout: Holdout


class HoldoutRegistry:
    """Resolves ``holdout_ref`` to a :class:`Holdout` for the daemon; thread-safe.

    ``allow_plaintext`` and ``synthetic`` are the effective dev-mode switches (flag OR env, spec 60
    §1.2; the production-mode guard is :func:`evidenceos.core.holdout.verify_holdout_policy`).
    ``env`` supplies ``EVIDENCEOS_HOLDOUT_KEY_<ID>``; it is read at every resolve, so a removed
    key stops a cached holdout too. Decrypted labels are cached per ref and reloaded when the
    manifest, the label file or the key changes.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        allow_plaintext: bool,
        synthetic: bool,
        env: Mapping[str, str],
    ) -> None:
        self._root = Path(data_dir) / HOLDOUTS_DIR
        self._allow_plaintext = allow_plaintext
        self._synthetic = synthetic
        self._env = env
        self._lock = threading.Lock()
        self._cache: dict[str, _CacheEntry] = {}

    @property
    def synthetic(self) -> bool:
        return self._synthetic

    def describe(self, ref: str) -> HoldoutDescriptor:
        """Validate the ref and the manifest only (CreateClaimV2, spec 20 §3.4 step 8).

        Labels are not opened, so claims can be created while the key is only given to the
        executing daemon; :meth:`resolve` checks everything at execution.
        """
        validate_holdout_ref(ref)
        if self._synthetic:
            return synthetic_holdout(ref).descriptor
        manifest, _ = self._read_manifest(ref)
        return HoldoutDescriptor.from_manifest(ref, manifest)

    def resolve(self, ref: str) -> Holdout:
        """Descriptor plus verified labels (spec 30 §6), for execution.

        Order: ref, manifest, plaintext gate, directory and file modes, key, decrypt, then
        length, SHA-256 and binary checks against the manifest.
        """
        validate_holdout_ref(ref)
        if self._synthetic:
            return synthetic_holdout(ref)
        manifest, manifest_sig = self._read_manifest(ref)
        key_id = manifest.encryption_key_id
        if key_id is None and not self._allow_plaintext:
            raise FailedPrecondition(
                f"plaintext holdouts disabled: holdouts/{ref} has no encryption_key_id; encrypt "
                "its labels with `evidenceosctl holdout encrypt` (or, for development only, "
                "start the daemon with --allow-plaintext-holdouts)"
            )
        name = LABELS_ENC if key_id is not None else LABELS_BIN
        holdout_dir = self._root / ref
        label_path = holdout_dir / name
        label_stat = self._check_modes(ref, holdout_dir, label_path, name)

        key: bytes | None = None
        fingerprint = b""
        if key_id is not None:
            try:
                key = key_from_env(self._env, key_id)
            except EvidenceOSError as exc:
                raise FailedPrecondition(f"holdout key lookup failed: {exc.message}") from None
            fingerprint = hashlib.sha256(key).digest()

        with self._lock:
            cached = self._cache.get(ref)
        if (
            cached is not None
            and cached.manifest == manifest_sig
            and cached.labels == label_stat
            and cached.key_fingerprint == fingerprint
        ):
            return cached.holdout

        data, label_sig = self._read_labels(ref, label_path, name)
        if key is not None:
            try:
                labels = decode_labels_enc(data, key)
            except HoldoutCryptoError as exc:
                raise FailedPrecondition(
                    f"holdout labels decrypt failed for holdouts/{ref}/{name}: {exc.message}"
                ) from None
        else:
            labels = data
        if len(labels) != manifest.length:
            raise FailedPrecondition(
                f"holdout label length mismatch: holdouts/{ref}/{MANIFEST} says len "
                f"{manifest.length}, {name} holds {len(labels)} labels"
            )
        if hashlib.sha256(labels).digest() != manifest.labels_sha256:
            raise FailedPrecondition(
                f"holdout label hash mismatch: the labels in holdouts/{ref}/{name} do not match "
                f"labels_sha256_hex in {MANIFEST}"
            )
        if labels.translate(None, b"\x00\x01"):
            raise FailedPrecondition(
                f"holdout labels must be binary: holdouts/{ref}/{name} holds a byte other than "
                "0x00 or 0x01"
            )
        holdout = Holdout(HoldoutDescriptor.from_manifest(ref, manifest), labels)
        with self._lock:
            self._cache[ref] = _CacheEntry(manifest_sig, label_sig, fingerprint, holdout)
        return holdout

    # -- file access -------------------------------------------------------------------------

    def _read_manifest(self, ref: str) -> tuple[HoldoutManifest, _StatSig]:
        path = self._root / ref / MANIFEST
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise FailedPrecondition(
                        f"holdout manifest read failed: holdouts/{ref}/{MANIFEST} is not a file"
                    )
                data = fh.read(_MAX_MANIFEST_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument("unknown holdout_ref") from None
        except IsADirectoryError:
            raise FailedPrecondition(
                f"holdout manifest read failed: holdouts/{ref}/{MANIFEST} is a directory"
            ) from None
        except OSError as exc:
            raise FailedPrecondition(
                f"holdout manifest read failed: holdouts/{ref}/{MANIFEST}: {exc.strerror}"
            ) from None
        if len(data) > _MAX_MANIFEST_BYTES:
            raise FailedPrecondition(
                f"invalid holdout manifest: holdouts/{ref}/{MANIFEST} is larger than "
                f"{_MAX_MANIFEST_BYTES} bytes"
            )
        try:
            manifest = HoldoutManifest.from_json(data)
        except EvidenceOSError as exc:
            raise FailedPrecondition(f"{exc.message} (in holdouts/{ref}/{MANIFEST})") from None
        return manifest, _stat_sig(st)

    def _check_modes(self, ref: str, holdout_dir: Path, label_path: Path, name: str) -> _StatSig:
        """Enforce 0700/0600 on every resolve (a later chmod is noticed at once); return the
        label file's signature for the cache."""
        try:
            dir_st = os.stat(holdout_dir)
            file_st = os.stat(label_path)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"holdout labels read failed: holdouts/{ref}/{name} is missing"
            ) from None
        except OSError as exc:
            raise FailedPrecondition(
                f"holdout file metadata read failed: holdouts/{ref}: {exc.strerror}"
            ) from None
        if os.name != "posix":  # pragma: no cover - Windows relies on ACLs
            return _stat_sig(file_st)
        # Permission bits only, as in the reference: a setgid bit inherited from the data dir
        # survives `chmod 700` on directories and must not make the check unsatisfiable.
        dir_mode = dir_st.st_mode & 0o777
        file_mode = file_st.st_mode & 0o777
        if dir_mode != DIR_MODE:
            raise FailedPrecondition(
                f"holdout directory permissions must be 0700: holdouts/{ref} is {dir_mode:04o}; "
                f"run chmod 700 <data-dir>/holdouts/{ref}"
            )
        if file_mode != LABEL_FILE_MODE:
            raise FailedPrecondition(
                f"holdout label file permissions must be 0600: holdouts/{ref}/{name} is "
                f"{file_mode:04o}; run chmod 600 <data-dir>/holdouts/{ref}/{name}"
            )
        return _stat_sig(file_st)

    def _read_labels(self, ref: str, path: Path, name: str) -> tuple[bytes, _StatSig]:
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise FailedPrecondition(
                        f"holdout labels read failed: holdouts/{ref}/{name} is not a file"
                    )
                data = fh.read(_MAX_LABEL_FILE_BYTES)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"holdout labels read failed: holdouts/{ref}/{name} is missing"
            ) from None
        except OSError as exc:
            raise FailedPrecondition(
                f"holdout labels read failed: holdouts/{ref}/{name}: {exc.strerror}"
            ) from None
        return data, _stat_sig(st)


def load_key_file(path: Path) -> bytes:
    """Read a holdout data key from a file holding 64 hex characters (surrounding whitespace,
    such as a final newline, is ignored). Like signing keys, the file must be owner-only."""
    try:
        with path.open("rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            raw = fh.read(1024)
    except OSError as exc:
        raise FailedPrecondition(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and mode & 0o077:
        raise FailedPrecondition(
            f"key file {path} is readable by other users (mode {mode:04o}); run chmod 600 {path}"
        )
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    return parse_key_hex(text, f"key file {path}")


def write_label_file(path: Path, data: bytes) -> None:
    """Write a ``labels.enc`` payload or decrypted labels atomically with mode 0600."""
    try:
        atomic_write(path, data, mode=LABEL_FILE_MODE)
        os.chmod(path, LABEL_FILE_MODE)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write {path}: {exc.strerror or exc}") from None


def seal_labels(labels: bytes, key: bytes) -> bytes:
    """Encrypt labels into a ``labels.enc`` payload with a fresh random nonce."""
    return encode_labels_enc(labels, key, os.urandom(12))


def write_encrypted_holdout(
    data_dir: Path,
    ref: str,
    labels: bytes,
    key_id: str,
    key: bytes,
    created_at_unix: int,
    *,
    holdout_handle: bytes | None = None,
    k_bits_budget: float | None = None,
    access_credit_budget: float | None = None,
    pool_scope: str | None = None,
) -> HoldoutManifest:
    """Register a new encrypted holdout as ``<data-dir>/holdouts/<ref>/`` and return its manifest.

    The handle is 32 random bytes unless given: it is published (claim ids, capsules), so it must
    not be derived from the labels. ``labels.enc`` (0600) is written before ``manifest.json``
    (0600, it carries the labels' hash), so a reader never sees a manifest without its labels;
    both writes are atomic. An existing holdout under ``ref`` is never replaced.
    """
    validate_holdout_ref(ref)
    validate_holdout_labels(labels)
    key_env_var(key_id)  # the daemon must be able to name the key's variable
    handle = os.urandom(32) if holdout_handle is None else holdout_handle
    manifest = HoldoutManifest(
        holdout_handle=handle,
        length=len(labels),
        labels_sha256=hashlib.sha256(labels).digest(),
        created_at_unix=created_at_unix,
        encryption_key_id=key_id,
        k_bits_budget=k_bits_budget,
        access_credit_budget=access_credit_budget,
        pool_scope=pool_scope,
    )
    payload = seal_labels(labels, key)

    root = Path(data_dir) / HOLDOUTS_DIR
    holdout_dir = root / ref
    if (holdout_dir / MANIFEST).exists():
        raise AlreadyExists(
            f"holdout {ref!r} already exists in {root}; a holdout's labels never change under "
            "the same ref (claims pin its handle), so register the new labels under a new ref"
        )
    try:
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        holdout_dir.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(holdout_dir, DIR_MODE)  # mkdir's mode is filtered by the umask
        atomic_write(holdout_dir / LABELS_ENC, payload, mode=LABEL_FILE_MODE)
        os.chmod(holdout_dir / LABELS_ENC, LABEL_FILE_MODE)
        atomic_write(holdout_dir / MANIFEST, manifest.to_json(), mode=LABEL_FILE_MODE)
        fsync_dir(root)
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot write holdout {ref!r} under {root}: {exc.strerror or exc}"
        ) from None
    return manifest
