"""NullSpec contracts: model, canonical bytes, id and signatures (spec 50 §3.4, §3.6).

A NullSpec contract fixes the null hypothesis and e-process an oracle's outputs are scored
against. Its id is content-derived so that an operator cannot swap a contract behind an id:
``nullspec_id = SHA-256(canon(contract with nullspec_id = 32 zeros and signature = []))``.
Canon is spec 50 §1.1 (serde layout, :func:`evidenceos.core.governance.canonical_json_bytes`),
and byte fields are JSON arrays of integers (§1.4), exactly as vector C shows.

Registry verification (§3.6) is split from its I/O: the caller walks
``nullspecs/<oracle_id>/<id>.json`` + ``.sig`` and hands the parsed pieces to
:func:`verify_registry_entry`. Nothing here reads files or the clock.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import NewType, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidenceos.core.governance import (
    JsonValue,
    TrustedKeys,
    canonical_json_bytes,
    decode_hex,
    load_json_bytes,
    verify_ed25519_strict,
)
from evidenceos.errors import InvalidArgument, SignatureError

__all__ = [
    "NULLSPEC_SCHEMA_V1",
    "ZERO_NULLSPEC_ID",
    "DirichletMultinomialMixture",
    "DiscreteBuckets",
    "EProcessKind",
    "LikelihoodRatioFixedAlt",
    "NullSpecContract",
    "NullSpecId",
    "NullSpecKind",
    "NullSpecReason",
    "NullSpecRejected",
    "NullSpecSignatureError",
    "ParametricBernoulli",
    "authority_key_id",
    "p0_from_counts",
    "parse_authority_key",
    "sign_detached",
    "verify_eprocess_pairing",
    "verify_nullspec_signature",
    "verify_registry_entry",
]

NULLSPEC_SCHEMA_V1 = "evidenceos.nullspec.v1"

NullSpecId = NewType("NullSpecId", bytes)
"""32-byte content-derived NullSpec id (shown as 64 lowercase hex chars)."""

ZERO_NULLSPEC_ID = NullSpecId(bytes(32))
"""The id placeholder used inside the signing payload and in unsigned drafts."""

_U64_MAX = (1 << 64) - 1


@enum.unique
class NullSpecReason(enum.Enum):
    """Why a contract or registry entry was refused; the value is the operator message.

    ``unknown key id`` is the reference's text (spec 50 §10 scenario 24 matches on it).
    """

    SCHEMA = "invalid schema"
    UNKNOWN_KEY = "unknown key id"
    SIGNATURE_MALFORMED = "nullspec signature must be 64 bytes"
    BAD_SIGNATURE = "nullspec signature verification failed"
    ID_MISMATCH = "nullspec id mismatch"
    FOLDER_MISMATCH = "registry folder does not match contract oracle_id"
    STEM_MISMATCH = "registry file name does not match nullspec id"
    DETACHED_MALFORMED = "registry detached signature must be 64-byte hex"
    DETACHED_BAD = "registry detached signature does not verify under any authority key"
    AUTHORITY_KEY_MALFORMED = "nullspec authority key must be hex of a 32-byte Ed25519 key"
    PAIRING = "unsupported nullspec kind/eprocess pairing"


class NullSpecRejected(InvalidArgument):
    """A contract or registry entry is malformed or inconsistent; ``reason`` says how."""

    def __init__(self, reason: NullSpecReason, context: str = "") -> None:
        super().__init__(f"{reason.value} ({context})" if context else reason.value)
        self.reason = reason


class NullSpecSignatureError(SignatureError):
    """A contract's embedded or detached signature is missing, untrusted or invalid."""

    def __init__(self, reason: NullSpecReason, context: str = "") -> None:
        super().__init__(f"{reason.value} ({context})" if context else reason.value)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Model (serde externally tagged enums, spec 50 §1.4)


def _is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX


def _check_floats(values: Sequence[object], name: str) -> tuple[float, ...]:
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"{name} must contain numbers")
        as_float = float(value)
        if not math.isfinite(as_float):
            # serde writes non-finite floats as null and cannot read them back.
            raise InvalidArgument(f"{name} must contain finite numbers")
        out.append(as_float)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DiscreteBuckets:
    """Null: outputs fall in bucket ``i`` with probability ``p0[i]``."""

    p0: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "p0", _check_floats(self.p0, "p0"))

    def to_json(self) -> dict[str, JsonValue]:
        """``{"DiscreteBuckets": {"p0": [...]}}``."""
        return {"DiscreteBuckets": {"p0": list(self.p0)}}


@dataclass(frozen=True, slots=True)
class ParametricBernoulli:
    """Null: a binary output is 1 with probability ``p``."""

    p: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_floats((self.p,), "p")[0])

    def to_json(self) -> dict[str, JsonValue]:
        """``{"ParametricBernoulli": {"p": x}}``."""
        return {"ParametricBernoulli": {"p": self.p}}


@dataclass(frozen=True, slots=True)
class DirichletMultinomialMixture:
    """E-process: Dirichlet-multinomial mixture with concentration ``alpha``."""

    alpha: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _check_floats(self.alpha, "alpha"))

    def to_json(self) -> dict[str, JsonValue]:
        """``{"DirichletMultinomialMixture": {"alpha": [...]}}``."""
        return {"DirichletMultinomialMixture": {"alpha": list(self.alpha)}}


@dataclass(frozen=True, slots=True)
class LikelihoodRatioFixedAlt:
    """E-process: likelihood ratio against the fixed alternative ``alt``."""

    alt: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "alt", _check_floats(self.alt, "alt"))

    def to_json(self) -> dict[str, JsonValue]:
        """``{"LikelihoodRatioFixedAlt": {"alt": [...]}}``."""
        return {"LikelihoodRatioFixedAlt": {"alt": list(self.alt)}}


NullSpecKind: TypeAlias = DiscreteBuckets | ParametricBernoulli
EProcessKind: TypeAlias = DirichletMultinomialMixture | LikelihoodRatioFixedAlt


def _tagged(value: object, what: str) -> tuple[str, Mapping[str, object]]:
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidArgument(f"{what}: expected an object with exactly one variant key")
    ((tag, inner),) = value.items()
    if not isinstance(inner, dict):
        raise InvalidArgument(f"{what}: variant {tag} must be an object")
    return tag, inner


def _float_list(obj: Mapping[str, object], name: str, what: str) -> tuple[float, ...]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise InvalidArgument(f"{what}: {name} must be an array of numbers")
    try:
        return _check_floats(value, f"{what}: {name}")
    except OverflowError as exc:
        raise InvalidArgument(f"{what}: {name} number out of range") from exc


def _kind_from_json(value: object) -> NullSpecKind:
    tag, inner = _tagged(value, "kind")
    if tag == "DiscreteBuckets":
        return DiscreteBuckets(_float_list(inner, "p0", "kind"))
    if tag == "ParametricBernoulli":
        if "p" not in inner:
            raise InvalidArgument("kind: missing field p")
        try:
            return ParametricBernoulli(_check_floats([inner["p"]], "kind: p")[0])
        except OverflowError as exc:
            raise InvalidArgument("kind: p out of range") from exc
    raise InvalidArgument(f"kind: unknown variant {tag}")


def _eprocess_from_json(value: object) -> EProcessKind:
    tag, inner = _tagged(value, "eprocess")
    if tag == "DirichletMultinomialMixture":
        return DirichletMultinomialMixture(_float_list(inner, "alpha", "eprocess"))
    if tag == "LikelihoodRatioFixedAlt":
        return LikelihoodRatioFixedAlt(_float_list(inner, "alt", "eprocess"))
    raise InvalidArgument(f"eprocess: unknown variant {tag}")


def _byte_array(value: object, name: str, length: int | None) -> bytes:
    if not isinstance(value, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
    ):
        raise InvalidArgument(f"{name} must be an array of integers 0..255")
    if length is not None and len(value) != length:
        raise InvalidArgument(f"{name} must have {length} elements")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class NullSpecContract:
    """``SignedNullSpecContractV1`` (spec 50 §3.4); twelve fields, byte fields as ``bytes``.

    Build unsigned with ``nullspec_id=ZERO_NULLSPEC_ID`` and ``signature_ed25519=b""``, then
    :meth:`signed` fills both. Floats must be finite (serde cannot read back its ``null``).
    """

    oracle_id: str
    oracle_resolution_hash: bytes
    holdout_handle: str
    epoch_created: int
    ttl_epochs: int
    kind: NullSpecKind
    eprocess: EProcessKind
    created_by: str
    calibration_manifest_hash: bytes | None = None
    nullspec_id: NullSpecId = ZERO_NULLSPEC_ID
    signature_ed25519: bytes = b""
    schema: str = NULLSPEC_SCHEMA_V1

    def __post_init__(self) -> None:
        for name in ("schema", "oracle_id", "holdout_handle", "created_by"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgument(f"{name} must be a string")
        for name in ("epoch_created", "ttl_epochs"):
            if not _is_u64(getattr(self, name)):
                raise InvalidArgument(f"{name} must be an unsigned 64-bit integer")
        if len(self.nullspec_id) != 32:
            raise InvalidArgument("nullspec_id must be 32 bytes")
        if len(self.oracle_resolution_hash) != 32:
            raise InvalidArgument("oracle_resolution_hash must be 32 bytes")
        if self.calibration_manifest_hash is not None and len(self.calibration_manifest_hash) != 32:
            raise InvalidArgument("calibration_manifest_hash must be 32 bytes")
        if not isinstance(self.kind, DiscreteBuckets | ParametricBernoulli):
            raise InvalidArgument("kind must be DiscreteBuckets or ParametricBernoulli")
        if not isinstance(self.eprocess, DirichletMultinomialMixture | LikelihoodRatioFixedAlt):
            raise InvalidArgument("eprocess must be a known e-process")
        object.__setattr__(self, "nullspec_id", NullSpecId(bytes(self.nullspec_id)))
        object.__setattr__(self, "signature_ed25519", bytes(self.signature_ed25519))

    # -- encodings -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, JsonValue]:
        """serde's shape in struct order: byte fields as integer arrays (spec 50 §1.4)."""
        calibration = self.calibration_manifest_hash
        return {
            "schema": self.schema,
            "nullspec_id": list(self.nullspec_id),
            "oracle_id": self.oracle_id,
            "oracle_resolution_hash": list(self.oracle_resolution_hash),
            "holdout_handle": self.holdout_handle,
            "epoch_created": self.epoch_created,
            "ttl_epochs": self.ttl_epochs,
            "kind": self.kind.to_json(),
            "eprocess": self.eprocess.to_json(),
            "calibration_manifest_hash": None if calibration is None else list(calibration),
            "created_by": self.created_by,
            "signature_ed25519": list(self.signature_ed25519),
        }

    @classmethod
    def from_json(cls, value: object) -> NullSpecContract:
        """Parse serde's shape; unknown fields are ignored, a missing calibration is ``null``."""
        if not isinstance(value, dict):
            raise InvalidArgument("nullspec contract must be a JSON object")
        required = (
            "schema",
            "nullspec_id",
            "oracle_id",
            "oracle_resolution_hash",
            "holdout_handle",
            "epoch_created",
            "ttl_epochs",
            "kind",
            "eprocess",
            "created_by",
            "signature_ed25519",
        )
        for name in required:
            if name not in value:
                raise InvalidArgument(f"nullspec contract: missing field {name}")
        calibration = value.get("calibration_manifest_hash")
        return cls(
            schema=value["schema"],
            nullspec_id=NullSpecId(_byte_array(value["nullspec_id"], "nullspec_id", 32)),
            oracle_id=value["oracle_id"],
            oracle_resolution_hash=_byte_array(
                value["oracle_resolution_hash"], "oracle_resolution_hash", 32
            ),
            holdout_handle=value["holdout_handle"],
            epoch_created=value["epoch_created"],
            ttl_epochs=value["ttl_epochs"],
            kind=_kind_from_json(value["kind"]),
            eprocess=_eprocess_from_json(value["eprocess"]),
            calibration_manifest_hash=(
                None
                if calibration is None
                else _byte_array(calibration, "calibration_manifest_hash", 32)
            ),
            created_by=value["created_by"],
            signature_ed25519=_byte_array(value["signature_ed25519"], "signature_ed25519", None),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NullSpecContract:
        """Parse JSON bytes (any layout: compact canonical or pretty)."""
        return cls.from_json(load_json_bytes(data, "decode nullspec contract failed"))

    def canonical_bytes(self) -> bytes:
        """``canon(contract)`` with the real id and signature: stored form, ``.sig`` message."""
        return canonical_json_bytes(self.to_json())

    def signing_payload_bytes(self) -> bytes:
        """``canon`` with ``nullspec_id`` zeroed and ``signature_ed25519`` empty (spec 50 §3.4)."""
        unsigned = replace(self, nullspec_id=ZERO_NULLSPEC_ID, signature_ed25519=b"")
        return canonical_json_bytes(unsigned.to_json())

    def compute_id(self) -> NullSpecId:
        """SHA-256 of :meth:`signing_payload_bytes`: independent of id and signature."""
        return NullSpecId(hashlib.sha256(self.signing_payload_bytes()).digest())

    @property
    def id_hex(self) -> str:
        """The stored ``nullspec_id`` as 64 lowercase hex chars (file stems, events)."""
        return self.nullspec_id.hex()

    def signed(self, private_key: Ed25519PrivateKey) -> NullSpecContract:
        """A copy with the embedded signature over the signing payload and the computed id."""
        signature = private_key.sign(self.signing_payload_bytes())
        return replace(self, nullspec_id=self.compute_id(), signature_ed25519=signature)

    def is_expired(self, current_epoch: int) -> bool:
        """Expired iff ``current_epoch > epoch_created + ttl_epochs``; u64 add saturates."""
        return current_epoch > min(self.epoch_created + self.ttl_epochs, _U64_MAX)


def p0_from_counts(counts: Sequence[int]) -> tuple[float, ...]:
    """Add-one smoothed bucket null from calibration counts (spec 50 §4.1 ``nullspec create``).

    ``p0[i] = (counts[i] + 1) / sum_j (counts[j] + 1)`` in f64, summed with a plain left-to-right
    loop (spec 50 §1.1 rule 7) so the floats match the reference bit for bit.
    """
    if not counts:
        raise InvalidArgument("counts must be non-empty")
    for count in counts:
        if not _is_u64(count):
            raise InvalidArgument("counts must be unsigned 64-bit integers")
    smoothed = [float(count) + 1.0 for count in counts]
    denominator = 0.0
    for value in smoothed:
        denominator += value
    return tuple(value / denominator for value in smoothed)


# --------------------------------------------------------------------------------------------
# Verification


def verify_nullspec_signature(contract: NullSpecContract, authorities: TrustedKeys) -> None:
    """Check schema, signer, embedded signature and id, in the reference's order (§3.4, §3.6).

    ``authorities`` is the NullSpec keyring (``trusted-nullspec-keys/``); the signer is the key
    named by ``created_by``. Used by the registry and, in PY, by ``nullspec install``.
    """
    context = f"nullspec_id={contract.id_hex}"
    if contract.schema != NULLSPEC_SCHEMA_V1:
        raise NullSpecRejected(NullSpecReason.SCHEMA, f"{context}, schema={contract.schema!r}")
    public_key = authorities.get(contract.created_by)
    if public_key is None:
        raise NullSpecSignatureError(
            NullSpecReason.UNKNOWN_KEY, f"{context}, created_by={contract.created_by!r}"
        )
    if len(contract.signature_ed25519) != 64:
        raise NullSpecSignatureError(NullSpecReason.SIGNATURE_MALFORMED, context)
    if not verify_ed25519_strict(
        public_key, contract.signing_payload_bytes(), contract.signature_ed25519
    ):
        raise NullSpecSignatureError(NullSpecReason.BAD_SIGNATURE, context)
    if contract.nullspec_id != contract.compute_id():
        raise NullSpecRejected(NullSpecReason.ID_MISMATCH, context)


def sign_detached(contract: NullSpecContract, private_key: Ed25519PrivateKey) -> str:
    """The registry's ``<id>.sig`` content: hex of a signature over :meth:`canonical_bytes`."""
    return private_key.sign(contract.canonical_bytes()).hex()


def verify_registry_entry(
    contract: NullSpecContract,
    *,
    folder_oracle_id: str,
    file_stem: str,
    detached_signature: str,
    authorities: TrustedKeys,
) -> None:
    """Check one ``nullspecs/<folder>/<stem>.json`` + ``.sig`` pair (spec 50 §3.6 step 2).

    ``detached_signature`` is the ``.sig`` file's text (surrounding whitespace is trimmed); it
    must verify over the canonical bytes under *any* keyring key, as in the reference.
    """
    if contract.oracle_id != folder_oracle_id:
        raise NullSpecRejected(
            NullSpecReason.FOLDER_MISMATCH,
            f"folder={folder_oracle_id!r}, oracle_id={contract.oracle_id!r}",
        )
    if contract.id_hex != file_stem:
        raise NullSpecRejected(NullSpecReason.STEM_MISMATCH, f"file stem={file_stem!r}")
    verify_nullspec_signature(contract, authorities)
    signature = decode_hex(detached_signature.strip())
    if signature is None or len(signature) != 64:
        raise NullSpecSignatureError(NullSpecReason.DETACHED_MALFORMED, contract.id_hex)
    message = contract.canonical_bytes()
    for key_id in sorted(authorities.keys):
        public_key = authorities.keys[key_id]
        if verify_ed25519_strict(public_key, message, signature):
            return
    raise NullSpecSignatureError(NullSpecReason.DETACHED_BAD, contract.id_hex)


def authority_key_id(file_name: str) -> str:
    """Key id of a keyring file: its name without the last extension (``op1.pub`` -> ``op1``)."""
    return PurePosixPath(file_name).stem


def parse_authority_key(content: bytes) -> bytes:
    """One keyring file: hex of a 32-byte public key, surrounding whitespace trimmed (§3.6).

    The key must also be a usable point (checked when the :class:`TrustedKeys` is built).
    """
    try:
        key = decode_hex(content.decode("ascii").strip())
    except UnicodeDecodeError:
        key = None
    if key is None or len(key) != 32:
        raise NullSpecRejected(NullSpecReason.AUTHORITY_KEY_MALFORMED)
    return key


def verify_eprocess_pairing(contract: NullSpecContract) -> None:
    """The two (kind, e-process) pairs execution accepts (spec 50 §3.4).

    ``DiscreteBuckets`` + ``DirichletMultinomialMixture`` with one finite positive ``alpha`` per
    bucket, or ``ParametricBernoulli`` with ``0 < p < 1`` + ``LikelihoodRatioFixedAlt`` with two
    ``alt`` values. Anything else fails here, before any e-value is computed.
    """
    kind, eprocess = contract.kind, contract.eprocess
    if isinstance(kind, DiscreteBuckets) and isinstance(eprocess, DirichletMultinomialMixture):
        if len(eprocess.alpha) != len(kind.p0):
            raise NullSpecRejected(NullSpecReason.PAIRING, "alpha length must equal p0 length")
        if not all(a > 0 for a in eprocess.alpha):
            raise NullSpecRejected(NullSpecReason.PAIRING, "alpha must be finite and > 0")
        return
    if isinstance(kind, ParametricBernoulli) and isinstance(eprocess, LikelihoodRatioFixedAlt):
        if len(eprocess.alt) != 2:
            raise NullSpecRejected(NullSpecReason.PAIRING, "alt must have 2 elements")
        if not 0.0 < kind.p < 1.0:
            raise NullSpecRejected(NullSpecReason.PAIRING, "p must be in (0, 1)")
        return
    raise NullSpecRejected(
        NullSpecReason.PAIRING, f"{type(kind).__name__} + {type(eprocess).__name__}"
    )
