"""Signed operator governance: oracle records, epoch control, governance events.

One record model shared by ``evidenceosctl``, ``evidenceos-operator`` and the daemon, so that a
record written by any tool loads everywhere (spec 50 §4.8, decision D1: the disjointness
attestation is the three-field object, never a string).

Byte layouts follow spec 50 exactly and reproduce its §9 vectors:

* canonical JSON ("canon", §1.1) mimics ``serde_json`` after a recursive key sort, including
  serde's float layout — it is *not* RFC 8785, which only the ETL uses (DESIGN §4);
* oracle records and epoch control sign the 32-byte digest
  ``SHA-256(domain || canon(payload))`` (§1.2, §1.3, §3.2, §3.3);
* governance events sign ``canon({"epoch","event_type","key_id","payload"})`` directly and their
  ``event_id`` is the SHA-256 of those bytes (§3.7, vector E).

Governance events are hash-chained (DESIGN §1, §6): each chained event carries the hash of its
predecessor, see :func:`compute_event_hash` for the exact preimage.

Verification is strict Ed25519 (spec 50 §1.3: the reference uses ``verify_strict``): trusted keys
and signature ``R`` points of small order are refused, which honest keys never hit. Nothing here
reads files or the clock: callers pass bytes and ``now_unix_secs``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NewType, TypeAlias, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from evidenceos.errors import (
    ConfigError,
    InvalidArgument,
    LogIntegrityError,
    SignatureError,
)

__all__ = [
    "CANARY_RESET_DEFAULT_MAX_AGE_SECS",
    "DISJOINTNESS_STATEMENT_TYPE_V1",
    "DOMAIN_EPOCH_CONTROL_V1",
    "DOMAIN_GOVERNANCE_EVENT_V1",
    "DOMAIN_ORACLE_OPERATOR_RECORD_V1",
    "EVENT_CANARY_RESET",
    "EVENT_EPOCH_ADVANCED",
    "EVENT_NULLSPEC_ACTIVATE",
    "EVENT_NULLSPEC_INSTALL",
    "EVENT_ORACLE_CALIBRATION_ROTATED",
    "EVENT_ORACLE_RECORD_SIGNED",
    "EVENT_ORACLE_TTL_SET",
    "GENESIS_EVENT_HASH",
    "ORACLE_RECORD_SCHEMA_VERSION",
    "ChainedGovernanceEvent",
    "DisjointnessAttestation",
    "EpochControl",
    "EventHash",
    "GovernanceChainError",
    "GovernanceEvent",
    "GovernanceRejected",
    "GovernanceSignatureError",
    "JsonValue",
    "OperatorKeyId",
    "OracleOperatorConfig",
    "OracleOperatorRecord",
    "RejectReason",
    "TrustedKeys",
    "canary_reset_payload",
    "canonical_json_bytes",
    "chain_governance_event",
    "compute_event_hash",
    "decode_hex",
    "epoch_advanced_payload",
    "is_record_expired",
    "load_json_bytes",
    "nullspec_activate_payload",
    "nullspec_install_payload",
    "oracle_calibration_rotated_payload",
    "oracle_record_signed_payload",
    "oracle_ttl_set_payload",
    "parse_canary_reset_document",
    "provenance_failures",
    "public_key_bytes",
    "sha256_domain",
    "sign_governance_event",
    "signing_key_from_seed",
    "verify_canary_reset",
    "verify_ed25519_strict",
    "verify_epoch_control",
    "verify_governance_chain",
    "verify_governance_event",
    "verify_oracle_config",
    "verify_oracle_record",
]

JsonValue: TypeAlias = Union[  # noqa: UP007 - a recursive alias needs the string form
    bool, int, float, str, Sequence["JsonValue"], Mapping[str, "JsonValue"], None
]
"""A JSON tree as ``json.loads`` returns it (any Sequence/Mapping is accepted on output)."""

OperatorKeyId = NewType("OperatorKeyId", str)
"""Operator-chosen key label (e.g. ``ops-k1``) naming an entry of ``trusted_oracle_keys.json``.

Never derived from key material (spec 50 §1.3), unlike the ETL's ``KeyId``.
"""

EventHash = NewType("EventHash", bytes)
"""32-byte hash of a chained governance event (:func:`compute_event_hash`)."""

DOMAIN_ORACLE_OPERATOR_RECORD_V1 = b"evidenceos:oracle_operator_record:v1"
DOMAIN_EPOCH_CONTROL_V1 = b"evidenceos:epoch_control:v1"
DOMAIN_GOVERNANCE_EVENT_V1 = b"evidenceos:governance_event:v1"
"""Domain of the governance hash chain (PY only; the reference log is not chained)."""

ORACLE_RECORD_SCHEMA_VERSION = 1
DISJOINTNESS_STATEMENT_TYPE_V1 = "oracle_disjointness_v1"
GENESIS_EVENT_HASH = EventHash(bytes(32))
"""``prev_event_hash`` of the first event of a chain."""

CANARY_RESET_DEFAULT_MAX_AGE_SECS = 86_400
"""A signed reset document older than this is refused, so an old one cannot be replayed."""

EVENT_ORACLE_TTL_SET = "oracle_ttl_set"
EVENT_ORACLE_CALIBRATION_ROTATED = "oracle_calibration_rotated"
EVENT_ORACLE_RECORD_SIGNED = "oracle_record_signed"
EVENT_EPOCH_ADVANCED = "epoch_advanced"
EVENT_NULLSPEC_INSTALL = "nullspec_install"
EVENT_NULLSPEC_ACTIVATE = "nullspec_activate"
EVENT_CANARY_RESET = "canary_reset"

_U64_MAX = (1 << 64) - 1
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")


# --------------------------------------------------------------------------------------------
# Errors


@enum.unique
class RejectReason(enum.Enum):
    """Why a governance record, event or chain was refused; the value is the operator message.

    Texts follow the reference where it has one (spec 50 §3.2, §3.3, §4.11, D7) so that tests
    and runbooks can match substrings.
    """

    # oracle operator record (spec 50 §3.2, steps 1-9)
    UNSUPPORTED_SCHEMA_VERSION = "unsupported oracle operator schema_version"
    TTL_ZERO = "oracle ttl must be > 0"
    RECORD_IN_FUTURE = "oracle operator record updated_at_epoch is in the future"
    RECORD_EXPIRED = "oracle operator record expired"
    CALIBRATION_HASH_MISSING = "calibration manifest hash missing"
    CALIBRATION_HASH_MALFORMED = "calibration_manifest_hash_hex is not 32-byte hex"
    ATTESTATION_MISSING = "disjointness attestation must be set"
    ATTESTATION_KIND = "unsupported disjointness statement_type"
    ATTESTATION_SCOPE = "disjointness attestation scope must be non-empty"
    ATTESTATION_PROOF_HASH = "proof_sha256_hex is not 32-byte hex"
    RECORD_UNKNOWN_KEY = "unknown signing key for oracle config"
    RECORD_SIGNATURE_MALFORMED = "invalid oracle config signature encoding"
    RECORD_BAD_SIGNATURE = "oracle config signature verification failed"
    # epoch control (spec 50 §3.3)
    EPOCH_UPDATED_AT_MISSING = "epoch control updated_at_epoch missing"
    EPOCH_KEY_ID_MISSING = "epoch control key_id missing"
    EPOCH_SIGNATURE_MISSING = "epoch control signature missing"
    EPOCH_UNKNOWN_KEY = "unknown signing key for epoch control"
    EPOCH_SIGNATURE_MALFORMED = "invalid epoch control signature encoding"
    EPOCH_BAD_SIGNATURE = "epoch control signature verification failed"
    # governance events and the canary reset document (spec 50 §3.7, §3.8, §4.11)
    EVENT_UNSIGNED = "signed governance event required"
    EVENT_UNKNOWN_KEY = "unknown signing key for governance event"
    EVENT_SIGNATURE_MALFORMED = "invalid governance event signature encoding"
    EVENT_BAD_SIGNATURE = "governance event signature verification failed"
    EVENT_ID_MISMATCH = "governance event_id does not match its signed bytes"
    CANARY_EVENT_TYPE = "governance event_type must be canary_reset"
    CANARY_KEY_ID_MISSING = "canary reset key_id missing"
    CANARY_STREAM_MISMATCH = "canary reset payload does not name this stream"
    CANARY_IN_FUTURE = "canary reset epoch is in the future"
    CANARY_TOO_OLD = "canary reset document is too old"
    # hash chain (DESIGN §1, §6)
    CHAIN_BROKEN = "governance event chain broken: prev_event_hash mismatch"
    CHAIN_HEAD_MISMATCH = "governance event chain head mismatch"
    CHAIN_HASH_MISMATCH = "governance event_hash does not match its content"
    # trusted keys (spec 50 §3.1, §6.2)
    DECODE_TRUSTED_KEYS = "decode trusted keys failed"
    TRUSTED_KEY_HEX = "invalid trusted key hex"
    TRUSTED_KEY_LENGTH = "invalid trusted key length"
    TRUSTED_KEY_POINT = "invalid trusted key: not a usable Ed25519 public key"


class GovernanceRejected(ConfigError):
    """A governance record, document or key file is refused; ``reason`` says exactly why."""

    def __init__(self, reason: RejectReason, context: str = "") -> None:
        super().__init__(f"{reason.value} ({context})" if context else reason.value)
        self.reason = reason


class GovernanceSignatureError(SignatureError):
    """A governance signature is missing, malformed, untrusted or does not verify."""

    def __init__(self, reason: RejectReason, context: str = "") -> None:
        super().__init__(f"{reason.value} ({context})" if context else reason.value)
        self.reason = reason


class GovernanceChainError(LogIntegrityError):
    """The stored governance chain was edited, truncated, reordered or extended out of band."""

    def __init__(self, reason: RejectReason, index: int) -> None:
        super().__init__(f"{reason.value} (at event index {index})")
        self.reason = reason
        self.index = index


# --------------------------------------------------------------------------------------------
# Canonical JSON (spec 50 §1.1)


def canonical_json_bytes(value: JsonValue) -> bytes:
    """Encode ``value`` as spec 50 §1.1 canon: serde_json layout after a recursive key sort.

    Used for every signing payload, NullSpec id and governance hash of spec 50 (its §9 vectors);
    the ETL uses RFC 8785 instead (DESIGN §4). Raises :class:`InvalidArgument` for values JSON
    cannot carry (non-string keys, lone surrogates, other types).
    """
    parts: list[str] = []
    _encode(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("canonical JSON: string is not valid Unicode") from exc


def _encode(value: JsonValue, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))  # plain decimal even for int subclasses (IntEnum)
    elif isinstance(value, float):
        out.append(_format_float(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        out.append("{")
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise InvalidArgument("canonical JSON: object keys must be strings")
        # For str, code-point order equals the UTF-8 byte order spec 50 §1.1 asks for.
        for i, key in enumerate(sorted(keys)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise InvalidArgument(f"canonical JSON: unsupported type {type(value).__name__}")


def _format_float(x: float) -> str:
    """Format ``x`` like serde_json/ryu: shortest round-trip digits, serde's layout (§1.1 r. 6)."""
    if not math.isfinite(x):
        return "null"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    n, kk = len(digits), point  # value = 0.<digits> x 10^kk
    if kk - n >= 0 and kk <= 16:
        body = digits + "0" * (kk - n) + ".0"
    elif 0 < kk <= 16:
        body = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * (-kk) + digits
    else:
        head = digits[0] if n == 1 else digits[0] + "." + digits[1:]
        body = f"{head}e{kk - 1}"
    return sign + body


def load_json_bytes(data: bytes, what: str) -> object:
    """Parse UTF-8 JSON strictly: no NaN/Infinity tokens, no duplicate object keys.

    serde rejects the non-standard tokens; duplicate keys are refused because which copy wins
    would silently decide a signed value. ``what`` prefixes the error message.
    """

    def no_constants(token: str) -> object:
        raise ValueError(f"invalid JSON token {token}")

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        obj: dict[str, object] = {}
        for key, val in pairs:
            if key in obj:
                raise ValueError(f"duplicate key {key!r}")
            obj[key] = val
        return obj

    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Hashing and Ed25519 (spec 50 §1.2, §1.3)


def sha256_domain(domain: bytes, payload: bytes) -> bytes:
    """``SHA-256(domain || payload)``: plain concatenation, no length prefix (spec 50 §1.2)."""
    return hashlib.sha256(domain + payload).digest()


def signing_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """Build a signing key from the raw 32-byte seed of a ``--signing-key`` file (spec 50 §1.3)."""
    if len(seed) != 32:
        raise InvalidArgument("signing key must be raw 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The 32 raw public-key bytes, as published in ``trusted_oracle_keys.json`` (hex)."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# Edwards25519 constants (RFC 8032 §5.1) for the small-order test only; signing and verification
# stay in `cryptography`.
_P = (1 << 255) - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(data: bytes) -> tuple[int, int] | None:
    """Decode an Ed25519 point (RFC 8032 §5.1.3); ``None`` if it is not a canonical point."""
    if len(data) != 32:
        return None
    encoded = int.from_bytes(data, "little")
    sign = encoded >> 255
    y = encoded & ((1 << 255) - 1)
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _point_double(pt: tuple[int, int]) -> tuple[int, int]:
    x, y = pt
    t = _D * x * x * y * y % _P
    x3 = 2 * x * y * pow(1 + t, -1, _P) % _P
    y3 = (y * y + x * x) * pow(1 - t, -1, _P) % _P
    return x3, y3


def _is_small_order(pt: tuple[int, int]) -> bool:
    """True iff ``[8]pt`` is the identity, i.e. the point lies in the torsion subgroup."""
    for _ in range(3):
        pt = _point_double(pt)
    return pt == (0, 1)


def _usable_public_key(key: bytes) -> bool:
    point = _decode_point(key)
    return point is not None and not _is_small_order(point)


def verify_ed25519_strict(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 (RFC 8032, pure) with ``verify_strict``'s extra refusals (spec 50 §1.3).

    Refuses small-order or non-canonical public keys and small-order ``R``; OpenSSL already
    refuses non-canonical ``S``. Returns ``False`` instead of raising so callers pick the reason.
    """
    if len(signature) != 64 or not _usable_public_key(public_key):
        return False
    r_point = _decode_point(signature[:32])
    if r_point is None or _is_small_order(r_point):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def decode_hex(text: str) -> bytes | None:
    """Strict hex (either case, even length, nothing else), or ``None``.

    ``bytes.fromhex`` would also accept embedded whitespace, which no writer emits.
    """
    if not _HEX_RE.fullmatch(text):
        return None
    return bytes.fromhex(text)


def _is_hex32(text: str) -> bool:
    decoded = decode_hex(text)
    return decoded is not None and len(decoded) == 32


# --------------------------------------------------------------------------------------------
# Field decoding helpers (spec 50 §1.4: required fields, Options read as null, unknown ignored)


def _require_object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return value


def _get_u64(obj: Mapping[str, object], name: str, what: str) -> int:
    if name not in obj:
        raise InvalidArgument(f"{what}: missing field {name}")
    return _as_u64(obj[name], name, what)


def _as_u64(value: object, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise InvalidArgument(f"{what}: {name} must be an unsigned 64-bit integer")
    return value


def _get_opt_u64(obj: Mapping[str, object], name: str, what: str) -> int | None:
    value = obj.get(name)
    return None if value is None else _as_u64(value, name, what)


def _get_str(obj: Mapping[str, object], name: str, what: str) -> str:
    if name not in obj:
        raise InvalidArgument(f"{what}: missing field {name}")
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: {name} must be a string")
    return value


def _get_opt_str(obj: Mapping[str, object], name: str, what: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: {name} must be a string or null")
    return value


def _check_u64(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise InvalidArgument(f"{name} must be an unsigned 64-bit integer")


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")


# --------------------------------------------------------------------------------------------
# Trusted operator keys (spec 50 §3.1, §6.2 step 1)


@dataclass(frozen=True, slots=True)
class TrustedKeys:
    """``key_id -> 32-byte Ed25519 public key``, from ``trusted_oracle_keys.json``.

    Every key is checked when the set is built (hex, length, and — stricter than the reference,
    which waits until a record uses it — that it is a canonical point of large order), so a bad
    key refuses start-up/reload with a precise reason instead of surfacing later.
    """

    keys: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked: dict[str, bytes] = {}
        for key_id, key in self.keys.items():
            _check_str(key_id, "trusted key id")
            if len(key) != 32:
                raise GovernanceRejected(RejectReason.TRUSTED_KEY_LENGTH, key_id)
            if not _usable_public_key(key):
                raise GovernanceRejected(RejectReason.TRUSTED_KEY_POINT, key_id)
            checked[key_id] = key
        object.__setattr__(self, "keys", MappingProxyType(checked))

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustedKeys:
        """Parse the file bytes ``{"keys": {"<key_id>": "<pubkey_hex>"}}``."""
        try:
            value = load_json_bytes(data, RejectReason.DECODE_TRUSTED_KEYS.value)
        except InvalidArgument as exc:
            raise GovernanceRejected(RejectReason.DECODE_TRUSTED_KEYS, str(exc)) from exc
        return cls.from_json(value)

    @classmethod
    def from_json(cls, value: object) -> TrustedKeys:
        """Build from a parsed JSON tree; ``keys`` is required (``{}`` is refused, §3.1)."""
        if not isinstance(value, dict) or not isinstance(value.get("keys"), dict):
            raise GovernanceRejected(RejectReason.DECODE_TRUSTED_KEYS, "expected {'keys': {...}}")
        keys: dict[str, bytes] = {}
        for key_id, key_hex in value["keys"].items():
            if not isinstance(key_hex, str):
                raise GovernanceRejected(RejectReason.DECODE_TRUSTED_KEYS, f"{key_id}: not hex")
            key = decode_hex(key_hex)
            if key is None:
                raise GovernanceRejected(RejectReason.TRUSTED_KEY_HEX, key_id)
            if len(key) != 32:
                raise GovernanceRejected(RejectReason.TRUSTED_KEY_LENGTH, key_id)
            keys[key_id] = key
        return cls(keys)

    def to_json(self) -> dict[str, JsonValue]:
        """The file shape, lowercase hex, ids sorted."""
        return {"keys": {k: self.keys[k].hex() for k in sorted(self.keys)}}

    def get(self, key_id: str) -> bytes | None:
        """The public key named ``key_id``, or ``None`` when it is not trusted."""
        return self.keys.get(key_id)

    def __len__(self) -> int:
        return len(self.keys)


def _verify_with(
    trusted_keys: TrustedKeys,
    key_id: str,
    message: bytes,
    signature_hex: str,
    *,
    unknown: RejectReason,
    malformed: RejectReason,
    bad: RejectReason,
    context: str,
) -> None:
    public_key = trusted_keys.get(key_id)
    if public_key is None:
        raise GovernanceSignatureError(unknown, f"{context}, key_id={key_id!r}")
    signature = decode_hex(signature_hex)
    if signature is None or len(signature) != 64:
        raise GovernanceSignatureError(malformed, context)
    if not verify_ed25519_strict(public_key, message, signature):
        raise GovernanceSignatureError(bad, context)


# --------------------------------------------------------------------------------------------
# Oracle operator records (spec 50 §3.2, §4.8 D1, §5.1)


@dataclass(frozen=True, slots=True)
class DisjointnessAttestation:
    """The structured disjointness attestation (object form only, spec 50 §4.8 D1).

    Fields are kept exactly as stored because they are signed as stored; their production-mode
    checks (kind, non-blank scope, hex32 proof hash) live in :func:`provenance_failures`.
    """

    statement_type: str
    scope: str
    proof_sha256_hex: str

    def __post_init__(self) -> None:
        _check_str(self.statement_type, "statement_type")
        _check_str(self.scope, "scope")
        _check_str(self.proof_sha256_hex, "proof_sha256_hex")

    @classmethod
    def from_proof(cls, scope: str, proof: bytes) -> DisjointnessAttestation:
        """``oracle_disjointness_v1`` over the exact proof-file bytes (spec 50 §5.1)."""
        if not scope.strip():
            raise InvalidArgument("disjointness_scope must be non-empty")
        if not proof:
            raise InvalidArgument("disjointness proof must be non-empty")
        return cls(DISJOINTNESS_STATEMENT_TYPE_V1, scope, hashlib.sha256(proof).hexdigest())

    def to_json(self) -> dict[str, JsonValue]:
        """The three-key object, in struct order."""
        return {
            "statement_type": self.statement_type,
            "scope": self.scope,
            "proof_sha256_hex": self.proof_sha256_hex,
        }

    @classmethod
    def from_json(cls, value: object) -> DisjointnessAttestation:
        """Parse the object form; the reference ctl's legacy string form is refused (D1)."""
        what = "disjointness_attestation"
        if isinstance(value, str):
            raise InvalidArgument(
                f"{what}: legacy string attestation is not supported; "
                "re-sign the record with evidenceos-operator sign-oracle-record"
            )
        obj = _require_object(value, what)
        return cls(
            statement_type=_get_str(obj, "statement_type", what),
            scope=_get_str(obj, "scope", what),
            proof_sha256_hex=_get_str(obj, "proof_sha256_hex", what),
        )


@dataclass(frozen=True, slots=True)
class OracleOperatorRecord:
    """One signed per-oracle TTL/calibration/provenance record (spec 50 §3.2).

    ``oracle_id`` is the map key of ``oracle_operator_config.json`` and part of the signed
    payload. ``calibration_manifest_hash_hex`` is ``None`` when absent: the payload signs it as
    ``""`` (the reference's asymmetry), so an empty string is not a distinct value and is
    refused here (the JSON reader maps ``""`` to ``None``). ``signature_ed25519`` is ``""``
    until :meth:`signed`.
    """

    oracle_id: str
    ttl_epochs: int
    updated_at_epoch: int
    key_id: OperatorKeyId
    signature_ed25519: str = ""
    schema_version: int = ORACLE_RECORD_SCHEMA_VERSION
    calibration_manifest_hash_hex: str | None = None
    calibration_epoch: int | None = None
    disjointness_attestation: DisjointnessAttestation | None = None
    nonoverlap_proof_uri: str | None = None

    def __post_init__(self) -> None:
        _check_str(self.oracle_id, "oracle_id")
        _check_u64(self.ttl_epochs, "ttl_epochs")
        _check_u64(self.updated_at_epoch, "updated_at_epoch")
        _check_str(self.key_id, "key_id")
        _check_str(self.signature_ed25519, "signature_ed25519")
        _check_u64(self.schema_version, "schema_version")
        if self.schema_version >= 1 << 32:
            raise InvalidArgument("schema_version must be an unsigned 32-bit integer")
        if self.calibration_manifest_hash_hex is not None:
            _check_str(self.calibration_manifest_hash_hex, "calibration_manifest_hash_hex")
            if self.calibration_manifest_hash_hex == "":
                raise InvalidArgument("calibration_manifest_hash_hex: use None, not ''")
        if self.calibration_epoch is not None:
            _check_u64(self.calibration_epoch, "calibration_epoch")
        if self.disjointness_attestation is not None and not isinstance(
            self.disjointness_attestation, DisjointnessAttestation
        ):
            raise InvalidArgument("disjointness_attestation must be a DisjointnessAttestation")
        if self.nonoverlap_proof_uri is not None:
            _check_str(self.nonoverlap_proof_uri, "nonoverlap_proof_uri")

    def signing_payload(self) -> dict[str, JsonValue]:
        """The nine-key object that is canonicalized and signed (spec 50 §3.2)."""
        attestation = self.disjointness_attestation
        return {
            "oracle_id": self.oracle_id,
            "schema_version": self.schema_version,
            "ttl_epochs": self.ttl_epochs,
            "calibration_manifest_hash_hex": self.calibration_manifest_hash_hex or "",
            "calibration_epoch": self.calibration_epoch,
            "disjointness_attestation": None if attestation is None else attestation.to_json(),
            "nonoverlap_proof_uri": self.nonoverlap_proof_uri,
            "updated_at_epoch": self.updated_at_epoch,
            "key_id": self.key_id,
        }

    def signing_payload_bytes(self) -> bytes:
        """``canon(payload)`` — vector A/A2 text."""
        return canonical_json_bytes(self.signing_payload())

    def digest(self) -> bytes:
        """The 32-byte message Ed25519 signs: ``sha256_domain(ORACLE_RECORD_V1, canon)``."""
        return sha256_domain(DOMAIN_ORACLE_OPERATOR_RECORD_V1, self.signing_payload_bytes())

    def signed(self, private_key: Ed25519PrivateKey) -> OracleOperatorRecord:
        """A copy carrying a fresh signature over :meth:`digest` (lowercase hex)."""
        return replace(self, signature_ed25519=private_key.sign(self.digest()).hex())

    def to_json(self) -> dict[str, JsonValue]:
        """The record body as stored under ``oracles.<oracle_id>`` (struct order, nulls kept)."""
        attestation = self.disjointness_attestation
        return {
            "schema_version": self.schema_version,
            "ttl_epochs": self.ttl_epochs,
            "calibration_manifest_hash_hex": self.calibration_manifest_hash_hex,
            "calibration_epoch": self.calibration_epoch,
            "disjointness_attestation": None if attestation is None else attestation.to_json(),
            "nonoverlap_proof_uri": self.nonoverlap_proof_uri,
            "updated_at_epoch": self.updated_at_epoch,
            "key_id": self.key_id,
            "signature_ed25519": self.signature_ed25519,
        }

    @classmethod
    def from_json(cls, oracle_id: str, value: object) -> OracleOperatorRecord:
        """Parse one record body; the four optional fields may be absent or ``null``."""
        what = f"oracle record {oracle_id!r}"
        obj = _require_object(value, what)
        schema_version = _get_u64(obj, "schema_version", what)
        if schema_version >= 1 << 32:
            raise InvalidArgument(f"{what}: schema_version must be an unsigned 32-bit integer")
        raw_attestation = obj.get("disjointness_attestation")
        return cls(
            oracle_id=oracle_id,
            schema_version=schema_version,
            ttl_epochs=_get_u64(obj, "ttl_epochs", what),
            calibration_manifest_hash_hex=(
                _get_opt_str(obj, "calibration_manifest_hash_hex", what) or None
            ),
            calibration_epoch=_get_opt_u64(obj, "calibration_epoch", what),
            disjointness_attestation=(
                None
                if raw_attestation is None
                else DisjointnessAttestation.from_json(raw_attestation)
            ),
            nonoverlap_proof_uri=_get_opt_str(obj, "nonoverlap_proof_uri", what),
            updated_at_epoch=_get_u64(obj, "updated_at_epoch", what),
            key_id=OperatorKeyId(_get_str(obj, "key_id", what)),
            signature_ed25519=_get_str(obj, "signature_ed25519", what),
        )


@dataclass(frozen=True, slots=True)
class OracleOperatorConfig:
    """The whole ``oracle_operator_config.json`` (``{"oracles": {id: record}}``), ids sorted."""

    records: tuple[OracleOperatorRecord, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.records, key=lambda r: r.oracle_id))
        ids = [r.oracle_id for r in ordered]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("oracle operator config: duplicate oracle_id")
        object.__setattr__(self, "records", ordered)

    def get(self, oracle_id: str) -> OracleOperatorRecord | None:
        """The record for ``oracle_id`` or ``None``."""
        for record in self.records:
            if record.oracle_id == oracle_id:
                return record
        return None

    def to_json(self) -> dict[str, JsonValue]:
        """File shape with ids in sorted order (spec 50 §5.1 PY)."""
        return {"oracles": {r.oracle_id: r.to_json() for r in self.records}}

    @classmethod
    def from_json(cls, value: object) -> OracleOperatorConfig:
        """Parse a JSON tree; ``oracles`` is required (spec 50 §3.2)."""
        what = "decode oracle config failed"
        obj = _require_object(value, what)
        oracles = obj.get("oracles")
        if not isinstance(oracles, dict):
            raise InvalidArgument(f"{what}: missing object field oracles")
        return cls(tuple(OracleOperatorRecord.from_json(k, v) for k, v in oracles.items()))

    @classmethod
    def from_bytes(cls, data: bytes) -> OracleOperatorConfig:
        """Parse the file bytes."""
        return cls.from_json(load_json_bytes(data, "decode oracle config failed"))


def is_record_expired(record: OracleOperatorRecord, now_unix_secs: int) -> bool:
    """TTL predicate: expired iff ``now - updated_at_epoch > ttl_epochs`` (saturating).

    Both sides are Unix seconds (spec 50 §1.5, §7 D3): the record stays fresh through
    ``updated_at_epoch + ttl_epochs`` inclusive. A record dated in the future is not "expired";
    it is refused separately (:attr:`RejectReason.RECORD_IN_FUTURE`).
    """
    return max(now_unix_secs - record.updated_at_epoch, 0) > record.ttl_epochs


def provenance_failures(
    record: OracleOperatorRecord, now_unix_secs: int
) -> tuple[RejectReason, ...]:
    """Every production-mode provenance failure of ``record``, one reason each, in check order.

    These are spec 50 §3.2 steps 4-7 (§6.3): fresh record, non-empty 32-byte calibration hash,
    and an ``oracle_disjointness_v1`` attestation with a non-blank scope and a hex32 proof
    hash. An empty tuple means the record's provenance is complete. Listing all of them lets an
    operator fix a record in one pass; :func:`verify_oracle_record` raises the first.
    """
    reasons: list[RejectReason] = []
    if is_record_expired(record, now_unix_secs):
        reasons.append(RejectReason.RECORD_EXPIRED)
    calibration = record.calibration_manifest_hash_hex
    if calibration is None:
        reasons.append(RejectReason.CALIBRATION_HASH_MISSING)
    elif not _is_hex32(calibration):
        reasons.append(RejectReason.CALIBRATION_HASH_MALFORMED)
    attestation = record.disjointness_attestation
    if attestation is None:
        reasons.append(RejectReason.ATTESTATION_MISSING)
    else:
        if attestation.statement_type != DISJOINTNESS_STATEMENT_TYPE_V1:
            reasons.append(RejectReason.ATTESTATION_KIND)
        if not attestation.scope.strip():
            reasons.append(RejectReason.ATTESTATION_SCOPE)
        if not _is_hex32(attestation.proof_sha256_hex):
            reasons.append(RejectReason.ATTESTATION_PROOF_HASH)
    return tuple(reasons)


def verify_oracle_record(
    record: OracleOperatorRecord,
    trusted_keys: TrustedKeys,
    *,
    now_unix_secs: int,
    enforce_provenance: bool,
) -> None:
    """Verify one record in the reference's order (spec 50 §3.2 steps 1-9); raise the first failure.

    ``enforce_provenance`` is production mode with disjointness required (§6.1 step 5). Without
    it the attestation is not inspected (it is still signed) and freshness is not enforced, but
    a record dated in the future and a malformed calibration hash are refused in every mode.
    Raises :class:`GovernanceRejected` or :class:`GovernanceSignatureError` (``.reason``).
    """
    context = f"oracle_id={record.oracle_id!r}"
    if record.schema_version != ORACLE_RECORD_SCHEMA_VERSION:
        raise GovernanceRejected(RejectReason.UNSUPPORTED_SCHEMA_VERSION, context)
    if record.ttl_epochs == 0:
        raise GovernanceRejected(RejectReason.TTL_ZERO, context)
    if record.updated_at_epoch > now_unix_secs:
        raise GovernanceRejected(RejectReason.RECORD_IN_FUTURE, context)
    if enforce_provenance:
        failures = provenance_failures(record, now_unix_secs)
        if failures:
            raise GovernanceRejected(failures[0], context)
    elif record.calibration_manifest_hash_hex is not None and not _is_hex32(
        record.calibration_manifest_hash_hex
    ):
        raise GovernanceRejected(RejectReason.CALIBRATION_HASH_MALFORMED, context)
    _verify_with(
        trusted_keys,
        record.key_id,
        record.digest(),
        record.signature_ed25519,
        unknown=RejectReason.RECORD_UNKNOWN_KEY,
        malformed=RejectReason.RECORD_SIGNATURE_MALFORMED,
        bad=RejectReason.RECORD_BAD_SIGNATURE,
        context=context,
    )


def verify_oracle_config(
    config: OracleOperatorConfig,
    trusted_keys: TrustedKeys,
    *,
    now_unix_secs: int,
    enforce_provenance: bool,
) -> None:
    """Verify every record in sorted ``oracle_id`` order, so the reported error is deterministic.

    The first failure refuses the whole config (spec 50 §6.2 step 2: start-up/reload fails).
    """
    for record in config.records:
        verify_oracle_record(
            record,
            trusted_keys,
            now_unix_secs=now_unix_secs,
            enforce_provenance=enforce_provenance,
        )


# --------------------------------------------------------------------------------------------
# Epoch control (spec 50 §3.3, §4.9, §5.2)


@dataclass(frozen=True, slots=True)
class EpochControl:
    """The signed forced epoch; all fields optional, ``forced_epoch=None`` means "none".

    ``event_id`` is written by the ctl for cross-reference and is neither signed nor checked.
    """

    forced_epoch: int | None = None
    updated_at_epoch: int | None = None
    key_id: OperatorKeyId | None = None
    signature_ed25519: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("forced_epoch", "updated_at_epoch"):
            value = getattr(self, name)
            if value is not None:
                _check_u64(value, name)
        for name in ("key_id", "signature_ed25519", "event_id"):
            value = getattr(self, name)
            if value is not None:
                _check_str(value, name)

    @classmethod
    def sign(
        cls,
        private_key: Ed25519PrivateKey,
        *,
        forced_epoch: int,
        updated_at_epoch: int,
        key_id: OperatorKeyId,
        event_id: str | None = None,
    ) -> EpochControl:
        """A signed epoch control record (spec 50 §3.3)."""
        unsigned = cls(forced_epoch, updated_at_epoch, key_id, None, event_id)
        return replace(unsigned, signature_ed25519=private_key.sign(unsigned.digest()).hex())

    def signing_payload_bytes(self) -> bytes:
        """``canon({"forced_epoch","updated_at_epoch","key_id"})`` — vector B text."""
        if self.forced_epoch is None or self.updated_at_epoch is None or self.key_id is None:
            raise InvalidArgument("epoch control: forced_epoch, updated_at_epoch, key_id needed")
        return canonical_json_bytes(
            {
                "forced_epoch": self.forced_epoch,
                "updated_at_epoch": self.updated_at_epoch,
                "key_id": self.key_id,
            }
        )

    def digest(self) -> bytes:
        """The 32-byte signed message ``sha256_domain(EPOCH_CONTROL_V1, canon)``."""
        return sha256_domain(DOMAIN_EPOCH_CONTROL_V1, self.signing_payload_bytes())

    def to_json(self) -> dict[str, JsonValue]:
        """File shape, keys sorted; ``event_id`` only when present (spec 50 §4.9, §5.2)."""
        out: dict[str, JsonValue] = {}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        out["forced_epoch"] = self.forced_epoch
        out["key_id"] = self.key_id
        out["signature_ed25519"] = self.signature_ed25519
        out["updated_at_epoch"] = self.updated_at_epoch
        return out

    @classmethod
    def from_json(cls, value: object) -> EpochControl:
        """Parse a JSON tree; ``{}`` is valid and means no forced epoch."""
        what = "decode epoch control failed"
        obj = _require_object(value, what)
        key_id = _get_opt_str(obj, "key_id", what)
        return cls(
            forced_epoch=_get_opt_u64(obj, "forced_epoch", what),
            updated_at_epoch=_get_opt_u64(obj, "updated_at_epoch", what),
            key_id=None if key_id is None else OperatorKeyId(key_id),
            signature_ed25519=_get_opt_str(obj, "signature_ed25519", what),
            event_id=_get_opt_str(obj, "event_id", what),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochControl:
        """Parse the file bytes."""
        return cls.from_json(load_json_bytes(data, "decode epoch control failed"))


def verify_epoch_control(control: EpochControl, trusted_keys: TrustedKeys) -> None:
    """Verify a forced epoch (spec 50 §3.3); nothing to check when ``forced_epoch`` is ``None``.

    Like the reference, ``updated_at_epoch`` is not compared with the clock and going backwards
    is allowed (operators may rewind on purpose; every change is a logged governance event).
    """
    if control.forced_epoch is None:
        return
    if control.updated_at_epoch is None:
        raise GovernanceRejected(RejectReason.EPOCH_UPDATED_AT_MISSING)
    if control.key_id is None:
        raise GovernanceRejected(RejectReason.EPOCH_KEY_ID_MISSING)
    if control.signature_ed25519 is None:
        raise GovernanceSignatureError(RejectReason.EPOCH_SIGNATURE_MISSING)
    _verify_with(
        trusted_keys,
        control.key_id,
        control.digest(),
        control.signature_ed25519,
        unknown=RejectReason.EPOCH_UNKNOWN_KEY,
        malformed=RejectReason.EPOCH_SIGNATURE_MALFORMED,
        bad=RejectReason.EPOCH_BAD_SIGNATURE,
        context=f"forced_epoch={control.forced_epoch}",
    )


# --------------------------------------------------------------------------------------------
# Governance events (spec 50 §3.7; DESIGN §1, §6, §9)


def _copy_json(value: object, where: str) -> JsonValue:
    """Deep-copy a JSON tree into fresh dicts/lists, refusing what canon cannot round-trip."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{where}: non-finite number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{where}: object keys must be strings")
            out[key] = _copy_json(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_copy_json(item, where) for item in value]
    raise InvalidArgument(f"{where}: unsupported type {type(value).__name__}")


def _freeze_payload(payload: object) -> Mapping[str, JsonValue]:
    if not isinstance(payload, Mapping):
        raise InvalidArgument("governance event payload must be a JSON object")
    copied = _copy_json(payload, "governance event payload")
    assert isinstance(copied, dict)  # noqa: S101 - a Mapping copies to a dict
    return MappingProxyType(copied)


@dataclass(frozen=True, slots=True)
class GovernanceEvent:
    """One signed governance change (a line of ``etl_governance_events.log``, spec 50 §3.7).

    The signature covers ``canon({"epoch","event_type","key_id","payload"})`` — no domain, no
    pre-hash — and ``event_id`` is SHA-256 of those bytes (vector E). ``epoch`` is Unix seconds
    (§1.5). ``signature_ed25519`` is ``""`` for an unsigned change, which only dev mode accepts
    (DESIGN §9). ``payload`` is stored as an immutable plain-JSON copy.
    """

    event_type: str
    epoch: int
    key_id: OperatorKeyId
    payload: Mapping[str, JsonValue]
    signature_ed25519: str = ""

    def __post_init__(self) -> None:
        _check_str(self.event_type, "event_type")
        _check_u64(self.epoch, "epoch")
        _check_str(self.key_id, "key_id")
        _check_str(self.signature_ed25519, "signature_ed25519")
        object.__setattr__(self, "payload", _freeze_payload(self.payload))

    def signed_bytes(self) -> bytes:
        """The exact bytes the operator signs (and whose SHA-256 is the event id)."""
        return canonical_json_bytes(
            {
                "event_type": self.event_type,
                "epoch": self.epoch,
                "key_id": self.key_id,
                "payload": self.payload,
            }
        )

    @property
    def event_id(self) -> str:
        """``hex(SHA-256(signed_bytes))`` (spec 50 §3.7); equal for byte-identical changes."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    @property
    def is_signed(self) -> bool:
        """True when a signature is present (not necessarily valid)."""
        return self.signature_ed25519 != ""

    def to_json(self) -> dict[str, JsonValue]:
        """The log-line object, fields in the reference's order (payload keys sorted)."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "epoch": self.epoch,
            "key_id": self.key_id,
            "payload": _copy_json({k: self.payload[k] for k in sorted(self.payload)}, "payload"),
            "signature_ed25519": self.signature_ed25519,
        }

    @classmethod
    def from_json(cls, value: object) -> GovernanceEvent:
        """Parse a log line object; a present ``event_id`` must match the content."""
        what = "decode governance event failed"
        obj = _require_object(value, what)
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            raise InvalidArgument(f"{what}: payload must be a JSON object")
        event = cls(
            event_type=_get_str(obj, "event_type", what),
            epoch=_get_u64(obj, "epoch", what),
            key_id=OperatorKeyId(_get_str(obj, "key_id", what)),
            payload=payload,
            signature_ed25519=_get_str(obj, "signature_ed25519", what),
        )
        _check_event_id(obj, event)
        return event


def _check_event_id(obj: Mapping[str, object], event: GovernanceEvent) -> None:
    claimed = obj.get("event_id")
    if claimed is not None and claimed != event.event_id:
        raise GovernanceRejected(RejectReason.EVENT_ID_MISMATCH, f"event_id={claimed!r}")


def sign_governance_event(
    private_key: Ed25519PrivateKey,
    *,
    event_type: str,
    epoch: int,
    key_id: OperatorKeyId,
    payload: Mapping[str, JsonValue],
) -> GovernanceEvent:
    """Build and sign a governance event (spec 50 §3.7 "signed bytes")."""
    unsigned = GovernanceEvent(event_type, epoch, key_id, payload)
    return replace(unsigned, signature_ed25519=private_key.sign(unsigned.signed_bytes()).hex())


def verify_governance_event(event: GovernanceEvent, trusted_keys: TrustedKeys) -> None:
    """Require a signature by a trusted operator key over :meth:`GovernanceEvent.signed_bytes`.

    Production mode refuses unsigned changes (DESIGN §9); the reference never verified events.
    """
    context = f"event_type={event.event_type!r}"
    if not event.is_signed:
        raise GovernanceSignatureError(RejectReason.EVENT_UNSIGNED, context)
    _verify_with(
        trusted_keys,
        event.key_id,
        event.signed_bytes(),
        event.signature_ed25519,
        unknown=RejectReason.EVENT_UNKNOWN_KEY,
        malformed=RejectReason.EVENT_SIGNATURE_MALFORMED,
        bad=RejectReason.EVENT_BAD_SIGNATURE,
        context=context,
    )


# Payload builders: one place that fixes each event type's payload so every tool agrees.


def oracle_ttl_set_payload(oracle_id: str, ttl_epochs: int) -> dict[str, JsonValue]:
    """``oracle_ttl_set`` payload (spec 50 §3.7)."""
    return {"oracle_id": oracle_id, "ttl_epochs": ttl_epochs}


def oracle_calibration_rotated_payload(
    oracle_id: str, calibration_hash: str
) -> dict[str, JsonValue]:
    """``oracle_calibration_rotated`` payload (spec 50 §3.7)."""
    return {"oracle_id": oracle_id, "calibration_hash": calibration_hash}


def oracle_record_signed_payload(record: OracleOperatorRecord) -> dict[str, JsonValue]:
    """``oracle_record_signed`` payload (PY: ``evidenceos-operator`` changes are logged too).

    Binds the event to the exact record through its signed digest.
    """
    return {
        "oracle_id": record.oracle_id,
        "ttl_epochs": record.ttl_epochs,
        "record_digest": record.digest().hex(),
    }


def epoch_advanced_payload(to: int) -> dict[str, JsonValue]:
    """``epoch_advanced`` payload (spec 50 §3.7)."""
    return {"to": to}


def nullspec_install_payload(
    nullspec_id_hex: str, oracle_id: str, resolution_hash_hex: str
) -> dict[str, JsonValue]:
    """``nullspec_install`` payload (spec 50 §3.7)."""
    return {
        "nullspec_id": nullspec_id_hex,
        "oracle_id": oracle_id,
        "resolution_hash": resolution_hash_hex,
    }


def nullspec_activate_payload(
    nullspec_id_hex: str, oracle_id: str, holdout: str, resolution_hash_hex: str
) -> dict[str, JsonValue]:
    """``nullspec_activate`` payload; ``oracle_id`` is a real oracle id (DESIGN §5)."""
    return {
        "nullspec_id": nullspec_id_hex.lower(),
        "oracle_id": oracle_id,
        "holdout": holdout,
        "resolution_hash": resolution_hash_hex,
    }


def canary_reset_payload(oracle_id: str, holdout: str) -> dict[str, JsonValue]:
    """``canary_reset`` payload naming the stream ``(oracle_id, holdout)`` (DESIGN §9)."""
    return {"oracle_id": oracle_id, "holdout": holdout}


# --------------------------------------------------------------------------------------------
# Canary reset document (spec 50 §3.8, §4.11; DESIGN §5, §6)


def parse_canary_reset_document(document: object) -> GovernanceEvent:
    """Read a ``--governance-event`` reset document (log-line shape, spec 50 §3.8).

    Checks in the reference's order first (``event_type``, then a non-empty signature), then the
    PY requirements: a ``key_id``, a Unix-seconds ``epoch`` and an object ``payload``.
    Verification against keys and the stream is :func:`verify_canary_reset`.
    """
    what = "decode canary reset document failed"
    obj = _require_object(document, what)
    if obj.get("event_type") != EVENT_CANARY_RESET:
        raise GovernanceRejected(RejectReason.CANARY_EVENT_TYPE)
    signature = obj.get("signature_ed25519")
    if not isinstance(signature, str) or not signature:
        raise GovernanceSignatureError(RejectReason.EVENT_UNSIGNED)
    key_id = obj.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise GovernanceRejected(RejectReason.CANARY_KEY_ID_MISSING)
    return GovernanceEvent.from_json(obj)


def verify_canary_reset(
    event: GovernanceEvent,
    trusted_keys: TrustedKeys,
    *,
    oracle_id: str,
    holdout: str,
    now_unix_secs: int,
    max_age_secs: int = CANARY_RESET_DEFAULT_MAX_AGE_SECS,
) -> None:
    """Accept a canary reset only if signed by a trusted operator key for exactly this stream.

    DESIGN §5/§6 require a verified signature (the reference checked none); the keyring is
    ``trusted_oracle_keys.json``. The payload must equal :func:`canary_reset_payload` for the
    stream, so a document cannot be redirected to another stream, and its ``epoch`` must lie in
    ``[now - max_age_secs, now]``, so an old document cannot be replayed after the next trip
    (callers should also refuse an ``event_id`` already present in the chain).
    """
    if event.event_type != EVENT_CANARY_RESET:
        raise GovernanceRejected(RejectReason.CANARY_EVENT_TYPE)
    if not event.key_id:
        raise GovernanceRejected(RejectReason.CANARY_KEY_ID_MISSING)
    verify_governance_event(event, trusted_keys)
    if dict(event.payload) != canary_reset_payload(oracle_id, holdout):
        raise GovernanceRejected(
            RejectReason.CANARY_STREAM_MISMATCH, f"oracle_id={oracle_id!r}, holdout={holdout!r}"
        )
    if event.epoch > now_unix_secs:
        raise GovernanceRejected(RejectReason.CANARY_IN_FUTURE, f"epoch={event.epoch}")
    if now_unix_secs - event.epoch > max_age_secs:
        raise GovernanceRejected(
            RejectReason.CANARY_TOO_OLD, f"epoch={event.epoch}, max_age_secs={max_age_secs}"
        )


# --------------------------------------------------------------------------------------------
# Hash chain (DESIGN §1, §6)


def compute_event_hash(event: GovernanceEvent, prev_event_hash: bytes) -> EventHash:
    """Hash of a chained event; the next event carries it as ``prev_event_hash``.

    Exact preimage::

        SHA-256( b"evidenceos:governance_event:v1"
                 || canon({"epoch", "event_type", "key_id", "payload",
                           "prev_event_hash": <64 lowercase hex>,
                           "signature_ed25519"}) )

    i.e. the signed fields plus the signature plus the predecessor's hash (``GENESIS_EVENT_HASH``,
    32 zero bytes, for the first event). ``event_id`` is omitted because it is derived from the
    signed fields. Canon is injective on these objects, so any edit changes the hash.
    """
    if len(prev_event_hash) != 32:
        raise InvalidArgument("prev_event_hash must be 32 bytes")
    body = canonical_json_bytes(
        {
            "epoch": event.epoch,
            "event_type": event.event_type,
            "key_id": event.key_id,
            "payload": event.payload,
            "prev_event_hash": prev_event_hash.hex(),
            "signature_ed25519": event.signature_ed25519,
        }
    )
    return EventHash(sha256_domain(DOMAIN_GOVERNANCE_EVENT_V1, body))


@dataclass(frozen=True, slots=True)
class ChainedGovernanceEvent:
    """A governance event at its place in the chain: the event plus its predecessor's hash."""

    event: GovernanceEvent
    prev_event_hash: EventHash

    def __post_init__(self) -> None:
        if len(self.prev_event_hash) != 32:
            raise InvalidArgument("prev_event_hash must be 32 bytes")

    @property
    def event_hash(self) -> EventHash:
        """:func:`compute_event_hash` of this entry."""
        return compute_event_hash(self.event, self.prev_event_hash)

    def to_json(self) -> dict[str, JsonValue]:
        """The event's log line plus ``prev_event_hash`` and ``event_hash`` (lowercase hex)."""
        out = self.event.to_json()
        out["prev_event_hash"] = self.prev_event_hash.hex()
        out["event_hash"] = self.event_hash.hex()
        return out

    @classmethod
    def from_json(cls, value: object) -> ChainedGovernanceEvent:
        """Parse an exported chained event; stored ``event_id``/``event_hash`` must match."""
        what = "decode chained governance event failed"
        obj = _require_object(value, what)
        prev = decode_hex(_get_str(obj, "prev_event_hash", what))
        if prev is None or len(prev) != 32:
            raise InvalidArgument(f"{what}: prev_event_hash must be 32-byte hex")
        entry = cls(GovernanceEvent.from_json(obj), EventHash(prev))
        claimed = obj.get("event_hash")
        if claimed is not None and claimed != entry.event_hash.hex():
            raise GovernanceRejected(RejectReason.CHAIN_HASH_MISMATCH, f"event_hash={claimed!r}")
        return entry


def chain_governance_event(
    prev: ChainedGovernanceEvent | None, event: GovernanceEvent
) -> ChainedGovernanceEvent:
    """Append ``event`` after ``prev`` (``None`` starts a new chain at the genesis hash)."""
    prev_hash = GENESIS_EVENT_HASH if prev is None else prev.event_hash
    return ChainedGovernanceEvent(event, prev_hash)


def verify_governance_chain(
    entries: Iterable[ChainedGovernanceEvent],
    *,
    expected_head: bytes | None = None,
    start_hash: bytes = GENESIS_EVENT_HASH,
    check_event: Callable[[GovernanceEvent], None] | None = None,
) -> None:
    """Check that ``entries`` link from ``start_hash`` in order; raise at the first break.

    An edited, deleted, reordered or inserted event breaks the ``prev_event_hash`` link of the
    entry after it. Removing or editing the *last* event leaves no later link to break, so pass
    ``expected_head`` (the stored head hash, e.g. from the ETL) to detect that too.
    ``check_event`` (e.g. a signature check) runs on each event in order.
    """
    running = start_hash
    count = 0
    for index, entry in enumerate(entries):
        if entry.prev_event_hash != running:
            raise GovernanceChainError(RejectReason.CHAIN_BROKEN, index)
        if check_event is not None:
            check_event(entry.event)
        running = entry.event_hash
        count = index + 1
    if expected_head is not None and running != expected_head:
        raise GovernanceChainError(RejectReason.CHAIN_HEAD_MISMATCH, count)
