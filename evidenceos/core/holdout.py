"""Holdouts: manifest, encrypted label format, synthetic labels and key naming (spec 30 §6).

A holdout is a vector of binary labels (one byte per row, each 0 or 1, 1..4096 rows) that guests
are scored against through the oracle and never see. Operators register one as
``<data>/holdouts/<holdout_ref>/`` with a ``manifest.json`` (:class:`HoldoutManifest`) and the
labels encrypted at rest in ``labels.enc`` (:func:`encode_labels_enc`):

    "EHLD" | 0x01 (version) | 0x02 (AES-256-GCM) | nonce (12) | ciphertext | tag (16), no AAD

The data key is named by the manifest's ``encryption_key_id`` and supplied through the
environment variable :func:`key_env_var` (64 hex characters, spec 50 §3.10). The synthetic
provider (``EVIDENCEOS_INSECURE_SYNTHETIC_HOLDOUT``, dev only) derives labels from the ref
itself (:func:`synthetic_holdout`); it is an insecure simulation, refused in production mode.

Everything here is pure: the caller reads files, draws nonces and passes the environment in as a
mapping. Files, modes and caching live in :mod:`evidenceos.store.holdouts`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from evidenceos.errors import ConfigError, FailedPrecondition, InvalidArgument

__all__ = [
    "HOLDOUT_KEY_ENV_PREFIX",
    "HOLDOUT_MANIFEST_SCHEMA_VERSION",
    "HOLDOUT_POOL_SCOPES",
    "LABELS_ENC_HEADER_LEN",
    "LABELS_ENC_MAGIC",
    "MAX_HOLDOUT_LEN",
    "MAX_HOLDOUT_REF_LEN",
    "MAX_KEY_ID_LEN",
    "SYNTHETIC_HOLDOUT_LEN",
    "SYNTHETIC_PREFIX",
    "Holdout",
    "HoldoutCryptoError",
    "HoldoutDescriptor",
    "HoldoutManifest",
    "decode_labels_enc",
    "derive_synthetic_labels",
    "encode_labels_enc",
    "key_env_var",
    "key_from_env",
    "parse_key_hex",
    "synthetic_holdout",
    "validate_holdout_labels",
    "validate_holdout_ref",
    "verify_holdout_policy",
]

HOLDOUT_MANIFEST_SCHEMA_VERSION = 1
#: Spec 20 §1.4: a holdout has 1..4096 labels (one oracle prediction byte per row).
MAX_HOLDOUT_LEN = 4096
MAX_HOLDOUT_REF_LEN = 128
MAX_KEY_ID_LEN = 128
HOLDOUT_POOL_SCOPES = frozenset({"global", "per_principal", "both"})
HOLDOUT_KEY_ENV_PREFIX = "EVIDENCEOS_HOLDOUT_KEY_"

SYNTHETIC_PREFIX = "synthetic-"
SYNTHETIC_HOLDOUT_LEN = 128

LABELS_ENC_MAGIC = b"EHLD"
_VERSION = 0x01
_ALG_AES_256_GCM = 0x02
_NONCE_LEN = 12
_TAG_LEN = 16
LABELS_ENC_HEADER_LEN = len(LABELS_ENC_MAGIC) + 2 + _NONCE_LEN
_KEY_LEN = 32

_REF_RE = re.compile(r"[A-Za-z0-9_-]+")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")
_U64_MAX = 2**64 - 1


class HoldoutCryptoError(FailedPrecondition):
    """A ``labels.enc`` payload cannot be opened: too short, unknown format, wrong key or tampered
    bytes, or labels that are not binary. The message is one of spec 50 §4.12's texts."""


# --------------------------------------------------------------------------------------------
# References, key ids, keys


def validate_holdout_ref(ref: object) -> str:
    """Check a ``holdout_ref`` (spec 20 §3.4 step 8) and return it.

    Length (UTF-8 bytes, as the reference measures it) is checked before the character set, so
    each bad ref gets exactly the reference's message.
    """
    if not isinstance(ref, str):
        raise InvalidArgument("holdout_ref must be a string")
    if not 1 <= len(ref.encode("utf-8", "surrogatepass")) <= MAX_HOLDOUT_REF_LEN:
        raise InvalidArgument(f"holdout_ref must be in [1,{MAX_HOLDOUT_REF_LEN}]")
    if not _REF_RE.fullmatch(ref):
        raise InvalidArgument("holdout_ref must match [A-Za-z0-9_-]+")
    return ref


def key_env_var(key_id: str) -> str:
    """Name of the environment variable holding the data key for ``key_id`` (spec 30 §6).

    ``key_id`` is 1..128 characters of ``[A-Za-z0-9_-]``; ``-`` becomes ``_`` and letters are
    upper-cased, so ``lab-2024`` reads ``EVIDENCEOS_HOLDOUT_KEY_LAB_2024``. (Ids differing only
    in case or ``-``/``_`` therefore share a variable, as in the reference.)
    """
    if not 1 <= len(key_id) <= MAX_KEY_ID_LEN or not _REF_RE.fullmatch(key_id):
        raise InvalidArgument(
            f"invalid holdout encryption_key_id: use 1..{MAX_KEY_ID_LEN} characters of "
            "[A-Za-z0-9_-]"
        )
    return HOLDOUT_KEY_ENV_PREFIX + key_id.replace("-", "_").upper()


def parse_key_hex(text: str, source: str) -> bytes:
    """Decode a 32-byte AES key written as 64 hex characters; ``source`` names where it came from.

    The key's value never appears in the message.
    """
    if len(text) != 2 * _KEY_LEN or not _HEX_RE.fullmatch(text):
        raise FailedPrecondition(
            f"invalid holdout key material in {source}: expected 64 hex characters (32 bytes)"
        )
    return bytes.fromhex(text)


def key_from_env(env: Mapping[str, str], key_id: str) -> bytes:
    """The env key provider: look ``key_id``'s data key up in ``env`` (spec 30 §6, 50 §3.10)."""
    name = key_env_var(key_id)
    value = env.get(name)
    if value is None:
        raise FailedPrecondition(
            f"holdout key for encryption_key_id not found: set {name} to the 64-hex-character key"
        )
    return parse_key_hex(value, name)


# --------------------------------------------------------------------------------------------
# Labels and labels.enc


def _is_binary(labels: bytes) -> bool:
    return not labels.translate(None, b"\x00\x01")


def validate_holdout_labels(labels: bytes) -> bytes:
    """Labels a holdout may hold: 1..4096 bytes, each 0 or 1 (spec 20 §1.4, spec 30 §2.7)."""
    if not 1 <= len(labels) <= MAX_HOLDOUT_LEN:
        raise InvalidArgument(
            f"holdout length must be in [1,{MAX_HOLDOUT_LEN}] labels, got {len(labels)}"
        )
    if not _is_binary(labels):
        raise InvalidArgument(
            "holdout labels must be non-empty binary bytes (one byte per row, each 0x00 or 0x01)"
        )
    return bytes(labels)


def _check_key(key: bytes) -> None:
    if len(key) != _KEY_LEN:
        raise InvalidArgument(f"invalid holdout key material: key must be {_KEY_LEN} bytes")


def encode_labels_enc(labels: bytes, key: bytes, nonce: bytes) -> bytes:
    """Seal ``labels`` as a ``labels.enc`` payload (spec 50 §3.10).

    ``nonce`` must be 12 fresh random bytes (never reused with the same key: GCM breaks). Labels
    must be non-empty and binary, checked here as on decrypt.
    """
    if not labels or not _is_binary(labels):
        raise InvalidArgument(
            "holdout labels must be non-empty binary bytes (one byte per row, each 0x00 or 0x01)"
        )
    _check_key(key)
    if len(nonce) != _NONCE_LEN:
        raise InvalidArgument(f"holdout nonce must be {_NONCE_LEN} bytes")
    sealed = AESGCM(bytes(key)).encrypt(bytes(nonce), bytes(labels), None)
    return LABELS_ENC_MAGIC + bytes((_VERSION, _ALG_AES_256_GCM)) + bytes(nonce) + sealed


def decode_labels_enc(data: bytes, key: bytes) -> bytes:
    """Open a ``labels.enc`` payload; every failure is a :class:`HoldoutCryptoError`.

    GCM authenticates the whole ciphertext and tag, and the header is checked byte for byte, so
    any flipped bit, truncation or wrong key is refused rather than yielding other labels.
    """
    _check_key(key)
    if len(data) < LABELS_ENC_HEADER_LEN + _TAG_LEN:
        raise HoldoutCryptoError(
            f"holdout payload too short: {len(data)} bytes, a labels.enc file has at least "
            f"{LABELS_ENC_HEADER_LEN + _TAG_LEN}"
        )
    if data[:4] != LABELS_ENC_MAGIC or data[4] != _VERSION or data[5] != _ALG_AES_256_GCM:
        raise HoldoutCryptoError(
            "unsupported holdout encryption format: expected magic EHLD, version 1, "
            "algorithm 2 (AES-256-GCM)"
        )
    nonce = bytes(data[6:LABELS_ENC_HEADER_LEN])
    try:
        labels = AESGCM(bytes(key)).decrypt(nonce, bytes(data[LABELS_ENC_HEADER_LEN:]), None)
    except InvalidTag:
        raise HoldoutCryptoError(
            "holdout decrypt failed: wrong key, or the file was modified or truncated"
        ) from None
    if not labels or not _is_binary(labels):
        raise HoldoutCryptoError("holdout labels must be non-empty binary bytes")
    return labels


# --------------------------------------------------------------------------------------------
# Manifest


def _manifest_error(name: str, problem: str) -> FailedPrecondition:
    # A bad manifest is the operator's file, not the client's request: FAILED_PRECONDITION.
    return FailedPrecondition(f"invalid holdout manifest {name}: {problem}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex32(obj: Mapping[str, object], name: str) -> bytes:
    value = obj.get(name)
    if value is None:
        raise _manifest_error(name, "missing")
    if not isinstance(value, str) or len(value) != 64 or not _HEX_RE.fullmatch(value):
        raise _manifest_error(name, "expected 64 hex characters (32 bytes)")
    return bytes.fromhex(value)


def _opt_budget(obj: Mapping[str, object], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _manifest_error(name, "must be a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise _manifest_error(name, "must be finite and >= 0")
    return number


@dataclass(frozen=True, slots=True)
class HoldoutManifest:
    """``manifest.json`` of a registry holdout (spec 30 §6), validated on construction.

    ``labels_sha256`` hashes the **decrypted** labels; ``encryption_key_id`` ``None`` means a
    plaintext ``labels.bin`` (dev only). Unknown JSON fields are ignored, as serde does.
    """

    holdout_handle: bytes
    length: int
    labels_sha256: bytes
    created_at_unix: int
    encryption_key_id: str | None = None
    k_bits_budget: float | None = None
    access_credit_budget: float | None = None
    pool_scope: str | None = None
    schema_version: int = HOLDOUT_MANIFEST_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != HOLDOUT_MANIFEST_SCHEMA_VERSION:
            raise FailedPrecondition(
                f"unsupported holdout manifest schema_version {self.schema_version!r}; "
                f"this version reads {HOLDOUT_MANIFEST_SCHEMA_VERSION}"
            )
        if len(self.holdout_handle) != 32:
            raise _manifest_error("holdout_handle_hex", "expected 32 bytes")
        if not _is_int(self.length) or not 1 <= self.length <= MAX_HOLDOUT_LEN:
            raise _manifest_error("len", f"must be an integer in [1,{MAX_HOLDOUT_LEN}]")
        if len(self.labels_sha256) != 32:
            raise _manifest_error("labels_sha256_hex", "expected 32 bytes")
        if not _is_int(self.created_at_unix) or not 1 <= self.created_at_unix <= _U64_MAX:
            raise _manifest_error("created_at_unix", "must be a non-zero unsigned integer")
        key_id = self.encryption_key_id
        if key_id is not None and not 1 <= len(key_id) <= MAX_KEY_ID_LEN:
            raise _manifest_error(
                "encryption_key_id", f"must be a string of 1..{MAX_KEY_ID_LEN} characters"
            )
        for name, budget in (
            ("holdout_k_bits_budget", self.k_bits_budget),
            ("holdout_access_credit_budget", self.access_credit_budget),
        ):
            if budget is not None and (not math.isfinite(budget) or budget < 0):
                raise _manifest_error(name, "must be finite and >= 0")
        if self.pool_scope is not None and self.pool_scope not in HOLDOUT_POOL_SCOPES:
            raise _manifest_error("holdout_pool_scope", "must be global, per_principal or both")
        object.__setattr__(self, "holdout_handle", bytes(self.holdout_handle))
        object.__setattr__(self, "labels_sha256", bytes(self.labels_sha256))

    @classmethod
    def from_json(cls, data: bytes) -> HoldoutManifest:
        """Parse ``manifest.json`` bytes; one precise error per bad field.

        A missing ``schema_version`` reads as 1 (serde's default in the reference); ``null``
        optional fields read as absent; booleans are not numbers.
        """

        def no_constants(token: str) -> object:
            raise ValueError(f"invalid JSON token {token}")

        try:
            obj = json.loads(data.decode("utf-8"), parse_constant=no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FailedPrecondition(f"invalid holdout manifest: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise FailedPrecondition("invalid holdout manifest: expected a JSON object")

        version = obj.get("schema_version", HOLDOUT_MANIFEST_SCHEMA_VERSION)
        if not _is_int(version) or version != HOLDOUT_MANIFEST_SCHEMA_VERSION:
            raise FailedPrecondition(
                f"unsupported holdout manifest schema_version {version!r}; "
                f"this version reads {HOLDOUT_MANIFEST_SCHEMA_VERSION}"
            )
        handle = _hex32(obj, "holdout_handle_hex")
        length = obj.get("len")
        if length is None:
            raise _manifest_error("len", "missing")
        if not _is_int(length) or not 1 <= length <= MAX_HOLDOUT_LEN:
            raise _manifest_error("len", f"must be an integer in [1,{MAX_HOLDOUT_LEN}]")
        labels_sha256 = _hex32(obj, "labels_sha256_hex")
        created = obj.get("created_at_unix")
        if created is None:
            raise _manifest_error("created_at_unix", "missing")
        if not _is_int(created) or not 1 <= created <= _U64_MAX:
            raise _manifest_error("created_at_unix", "must be a non-zero unsigned integer")
        key_id = obj.get("encryption_key_id")
        if key_id is not None and not isinstance(key_id, str):
            raise _manifest_error("encryption_key_id", "must be a string or null")
        scope = obj.get("holdout_pool_scope")
        if scope is not None and not isinstance(scope, str):
            raise _manifest_error("holdout_pool_scope", "must be a string or null")
        return cls(
            holdout_handle=handle,
            length=length,
            labels_sha256=labels_sha256,
            created_at_unix=created,
            encryption_key_id=key_id,
            k_bits_budget=_opt_budget(obj, "holdout_k_bits_budget"),
            access_credit_budget=_opt_budget(obj, "holdout_access_credit_budget"),
            pool_scope=scope,
        )

    def to_json(self) -> bytes:
        """Pretty JSON with a trailing newline; optional fields only when set."""
        doc: dict[str, object] = {
            "schema_version": self.schema_version,
            "holdout_handle_hex": self.holdout_handle.hex(),
            "len": self.length,
            "labels_sha256_hex": self.labels_sha256.hex(),
            "created_at_unix": self.created_at_unix,
            "encryption_key_id": self.encryption_key_id,
        }
        if self.k_bits_budget is not None:
            doc["holdout_k_bits_budget"] = self.k_bits_budget
        if self.access_credit_budget is not None:
            doc["holdout_access_credit_budget"] = self.access_credit_budget
        if self.pool_scope is not None:
            doc["holdout_pool_scope"] = self.pool_scope
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# Resolved holdouts


@dataclass(frozen=True, slots=True)
class HoldoutDescriptor:
    """What a claim pins at creation: ref, handle, length and the manifest's pool policy.

    CreateClaimV2 needs only this (the reference resolves the manifest there and opens the
    labels only at execution), so a missing key does not block claim creation.
    """

    ref: str
    handle: bytes
    length: int
    k_bits_budget: float | None = None
    access_credit_budget: float | None = None
    pool_scope: str | None = None

    @classmethod
    def from_manifest(cls, ref: str, manifest: HoldoutManifest) -> HoldoutDescriptor:
        return cls(
            ref=ref,
            handle=manifest.holdout_handle,
            length=manifest.length,
            k_bits_budget=manifest.k_bits_budget,
            access_credit_budget=manifest.access_credit_budget,
            pool_scope=manifest.pool_scope,
        )

    def verify_matches_claim(self, claim_handle: bytes, claim_length: int) -> None:
        """At execution the holdout must still be the one the claim pinned (spec 30 §6)."""
        if self.handle != claim_handle:
            raise FailedPrecondition(
                f"claim holdout handle mismatch: holdout {self.ref} now has handle "
                f"{self.handle.hex()}, the claim was created against {claim_handle.hex()}"
            )
        if self.length != claim_length:
            raise FailedPrecondition(
                f"claim holdout length mismatch: holdout {self.ref} has {self.length} labels, "
                f"the claim expects {claim_length}"
            )


@dataclass(frozen=True, slots=True)
class Holdout:
    """A resolved holdout: its descriptor and the labels (bytes, each 0 or 1).

    ``labels`` is kept out of ``repr`` so a logged holdout never leaks them.
    """

    descriptor: HoldoutDescriptor
    labels: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.labels) != self.descriptor.length:
            raise FailedPrecondition(
                f"holdout label length mismatch: expected {self.descriptor.length} labels, "
                f"found {len(self.labels)}"
            )
        if not _is_binary(self.labels):
            raise FailedPrecondition("holdout labels must be binary")
        object.__setattr__(self, "labels", bytes(self.labels))

    @property
    def ref(self) -> str:
        return self.descriptor.ref

    @property
    def handle(self) -> bytes:
        return self.descriptor.handle

    @property
    def length(self) -> int:
        return self.descriptor.length

    @property
    def k_bits_budget(self) -> float | None:
        return self.descriptor.k_bits_budget

    @property
    def access_credit_budget(self) -> float | None:
        return self.descriptor.access_credit_budget

    @property
    def pool_scope(self) -> str | None:
        return self.descriptor.pool_scope


def derive_synthetic_labels(handle: bytes, length: int) -> bytes:
    """``label[i] = (handle[i mod 32] XOR ((i * 31) mod 256)) & 1`` (spec 30 §6)."""
    if len(handle) != 32:
        raise InvalidArgument("holdout handle must be 32 bytes")
    if not 1 <= length <= MAX_HOLDOUT_LEN:
        raise InvalidArgument("holdout length out of bounds")
    return bytes((handle[i % 32] ^ ((i * 31) & 0xFF)) & 1 for i in range(length))


@functools.lru_cache(maxsize=256)
def synthetic_holdout(ref: str) -> Holdout:
    """The insecure synthetic provider: handle = SHA-256(ref), 128 labels derived from it.

    Anyone who knows the ref knows the labels; dev and tests only, refused in production.
    A pure function of ``ref`` returning an immutable value, so it is memoised (refusals are
    raised again every time).
    """
    validate_holdout_ref(ref)
    if not ref.startswith(SYNTHETIC_PREFIX):
        raise InvalidArgument("unknown holdout_ref")
    handle = hashlib.sha256(ref.encode("utf-8")).digest()
    descriptor = HoldoutDescriptor(ref=ref, handle=handle, length=SYNTHETIC_HOLDOUT_LEN)
    return Holdout(descriptor, derive_synthetic_labels(handle, SYNTHETIC_HOLDOUT_LEN))


# --------------------------------------------------------------------------------------------
# Start-up policy


def verify_holdout_policy(*, production_mode: bool, allow_plaintext: bool, synthetic: bool) -> None:
    """Refuse the dev-only holdout modes in production (spec 60 §1.5.1, 50 §6 steps 1-2).

    Each effective value is flag OR env (spec 60 §1.2); the caller combines them.
    """
    if not production_mode:
        return
    if allow_plaintext:
        raise ConfigError(
            "refusing startup: EVIDENCEOS_PRODUCTION_MODE=1 forbids plaintext holdouts; remove "
            "--allow-plaintext-holdouts and unset EVIDENCEOS_ALLOW_PLAINTEXT_HOLDOUTS"
        )
    if synthetic:
        raise ConfigError(
            "refusing startup: EVIDENCEOS_PRODUCTION_MODE=1 forbids insecure synthetic holdouts; "
            "remove --insecure-synthetic-holdout and unset EVIDENCEOS_INSECURE_SYNTHETIC_HOLDOUT"
        )
