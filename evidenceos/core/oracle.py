"""The oracle's resolution: quantisation, canonical symbols, hysteresis, hashes and TTL rules.

Source: spec 30 §2 (resolution, quantisation, canonical encoding, hysteresis and locality, the
three TTL comparisons, calibration/resolution hashes and pins, accuracy scoring) and spec 20 §6.2
(the pins hash). The oracle is the only channel from holdout to guest: it answers a prediction
vector with one bucket out of ``num_symbols``, and every answer costs ``log2(num_symbols)`` bits
in the ledger. Canonical decoding is strict (no padding, no truncation, no high bits) so that one
symbol has exactly one byte string; the daemon must decode a legacy output *before* it charges
anything (spec 30 §2.3 invariant), and every function here is pure so that ordering is the
caller's to keep.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evidenceos.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "CODEC_HASH_V1",
    "CODEC_SPEC_V1",
    "PINS_CODEC_HASH",
    "BucketRadius",
    "CustomHashNeighborhood",
    "ExactMatchOnly",
    "Hamming",
    "HysteresisState",
    "InvalidCanonicalEncoding",
    "LocalityPolicy",
    "NaNNotAllowed",
    "OracleAnswer",
    "OraclePins",
    "OracleResolution",
    "TieBreaker",
    "compute_accuracy",
    "compute_calibration_manifest_hash",
    "compute_default_resolution_hash",
    "compute_oracle_answer",
    "compute_oracle_pins_hash",
    "compute_resolution_hash",
    "compute_resolution_json_bytes",
    "is_local",
    "is_nullspec_expired",
    "is_pins_stale",
    "verify_calibration_hash",
]

_EPS = sys.float_info.epsilon
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

CODEC_SPEC_V1 = (
    "oracle-resolution/v1;codec=unsigned-big-endian;canonical=zero-high-bits;"
    "bucket-range=[0,num_symbols)"
)
"""The text whose SHA-256 is every resolution's ``codec_hash`` (spec 30 §2.1)."""

CODEC_HASH_V1 = hashlib.sha256(CODEC_SPEC_V1.encode()).digest()
"""``61af812a…a4d8``, identical for every resolution."""

PINS_CODEC_HASH = hashlib.sha256(b"evidenceos.oracle.codec.v1").digest()
"""``0661b541…4cb790``: the pins' codec hash, a different string from the resolution's (QUIRK)."""


class InvalidCanonicalEncoding(InvalidArgument):
    """Output bytes are not the canonical encoding of a symbol (spec 30 §2.3)."""


class NaNNotAllowed(InvalidArgument):
    """A NaN metric reached quantisation (spec 30 §2.2 step 1)."""


class TieBreaker(enum.Enum):
    """How a scaled metric maps to a bucket; values are the serde variant names."""

    LOWER = "Lower"
    UPPER = "Upper"
    NEAREST_EVEN = "NearestEven"


@dataclass(frozen=True, slots=True)
class Hamming:
    """Local when at most ``max_bits`` byte positions differ (bytes, despite the name)."""

    max_bits: int = 1


@dataclass(frozen=True, slots=True)
class BucketRadius:
    """Local when the first 8 bytes of SHA-256 of both vectors differ by <= ``r`` (QUIRK)."""

    r: int


@dataclass(frozen=True, slots=True)
class ExactMatchOnly:
    """Local only for identical vectors."""


@dataclass(frozen=True, slots=True)
class CustomHashNeighborhood:
    """Local when SHA-256(salt || data) of both share at least ``prefix_bits`` leading bits."""

    prefix_bits: int
    salt: bytes


LocalityPolicy = Hamming | BucketRadius | ExactMatchOnly | CustomHashNeighborhood


def _is_uint(value: Any, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _finite_non_negative(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0.0
    )


def _bytes32(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def _locality_to_json(policy: LocalityPolicy) -> Any:
    """serde's externally tagged, snake_case form; a unit variant is a bare string."""
    if isinstance(policy, Hamming):
        return {"hamming": {"max_bits": policy.max_bits}}
    if isinstance(policy, BucketRadius):
        return {"bucket_radius": {"r": policy.r}}
    if isinstance(policy, ExactMatchOnly):
        return "exact_match_only"
    return {
        "custom_hash_neighborhood": {
            "prefix_bits": policy.prefix_bits,
            "salt": list(policy.salt),
        }
    }


def _locality_from_json(data: Any) -> LocalityPolicy:
    if data == "exact_match_only":
        return ExactMatchOnly()
    if not isinstance(data, Mapping) or len(data) != 1:
        raise InvalidArgument("invalid locality policy")
    ((tag, body),) = data.items()
    if not isinstance(body, Mapping):
        raise InvalidArgument("invalid locality policy")
    if tag == "hamming" and set(body) == {"max_bits"} and _is_uint(body["max_bits"], _U32_MAX):
        return Hamming(body["max_bits"])
    if tag == "bucket_radius" and set(body) == {"r"} and _is_uint(body["r"], _U32_MAX):
        return BucketRadius(body["r"])
    if (
        tag == "custom_hash_neighborhood"
        and set(body) == {"prefix_bits", "salt"}
        and _is_uint(body["prefix_bits"], 2**16 - 1)
        and isinstance(body["salt"], list)
        and len(body["salt"]) == 32
        and all(_is_uint(b, 255) for b in body["salt"])
    ):
        return CustomHashNeighborhood(body["prefix_bits"], bytes(body["salt"]))
    raise InvalidArgument("invalid locality policy")


def _format_rust_f64(value: float) -> str:
    """Format a finite double the way serde_json (ryu) does: ``0.0``, ``0.25``, ``1e-7``, ``1e16``.

    Python's ``repr`` yields the same shortest digits but lays them out differently (spec 20 §7.1).
    """
    if not math.isfinite(value):
        raise InvalidArgument("non-finite float in a hashed resolution")
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent -= len(frac)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    n = len(digits)
    point = n + exponent
    if exponent >= 0 and point <= 16:
        body = digits + "0" * exponent + ".0"
    elif 0 < point <= 16:
        body = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        body = "0." + "0" * (-point) + digits
    else:
        body = digits[0] + ("." + digits[1:] if n > 1 else "") + "e" + str(point - 1)
    return ("-" if value < 0 else "") + body


@dataclass(frozen=True, slots=True)
class OracleResolution:
    """How raw metrics become symbols, and how symbols are encoded (spec 30 §2.1).

    :meth:`to_json` emits the fields in the hashing order of §2.6. ``bit_width`` is derived from
    ``num_symbols`` (bit length of ``num_symbols - 1``) rather than stored, so it cannot disagree.
    """

    num_symbols: int
    delta_sigma: float = 0.0
    codec_hash: bytes = CODEC_HASH_V1
    calibration_manifest_hash: bytes = bytes(32)
    calibrated_at_epoch: int = 0
    ttl_epochs: int | None = None
    tie_breaker: TieBreaker = TieBreaker.NEAREST_EVEN
    locality_policy: LocalityPolicy = field(default_factory=Hamming)

    def __post_init__(self) -> None:
        if not (_is_uint(self.num_symbols, _U32_MAX) and self.num_symbols >= 2):
            raise InvalidArgument("num_symbols must be an integer in [2, 2^32)")
        if not _finite_non_negative(self.delta_sigma):
            raise InvalidArgument("delta_sigma must be finite and >= 0")
        if not (_bytes32(self.codec_hash) and _bytes32(self.calibration_manifest_hash)):
            raise InvalidArgument("codec and calibration hashes must be 32 bytes")
        if not _is_uint(self.calibrated_at_epoch, _U64_MAX):
            raise InvalidArgument("calibrated_at_epoch must be a u64")
        if self.ttl_epochs is not None and not _is_uint(self.ttl_epochs, _U64_MAX):
            raise InvalidArgument("ttl_epochs must be a u64 or None")
        if isinstance(self.locality_policy, CustomHashNeighborhood) and not (
            len(self.locality_policy.salt) == 32
        ):
            raise InvalidArgument("custom hash neighbourhood salt must be 32 bytes")

    @property
    def bit_width(self) -> int:
        """Minimal bits per symbol: 2->1, 3->2, 8->3, 9->4, 256->8, 257->9, 1024->10."""
        return (self.num_symbols - 1).bit_length()

    @property
    def encoded_len_bytes(self) -> int:
        """Bytes per canonical symbol, ``ceil(bit_width / 8)``."""
        return (self.bit_width + 7) // 8

    @property
    def bits_per_call(self) -> float:
        """``log2(num_symbols)``: k charged per oracle answer (fractional unless a power of 2)."""
        return math.log2(self.num_symbols)

    def with_calibration(
        self, manifest_hash: bytes, calibrated_at_epoch: int, ttl_epochs: int | None
    ) -> OracleResolution:
        """The resolution as frozen into a claim: operator calibration hash, epoch and TTL."""
        return replace(
            self,
            calibration_manifest_hash=manifest_hash,
            calibrated_at_epoch=calibrated_at_epoch,
            ttl_epochs=ttl_epochs,
        )

    def quantize(self, value: float) -> int:
        """Bucket of a metric in [0, 1] (spec 30 §2.2); out-of-range values clamp, NaN is refused.

        NearestEven treats ``|frac - 0.5| < EPS`` as a tie and picks the even neighbour; otherwise
        it rounds to nearest (not Python's ``round``, which would tie-break differently).
        """
        if math.isnan(value):
            raise NaNNotAllowed("NaN metric cannot be quantised")
        top = self.num_symbols - 1
        scaled = min(max(min(max(value, 0.0), 1.0) * top, 0.0), float(top))
        if self.tie_breaker is TieBreaker.LOWER:
            bucket = math.floor(scaled)
        elif self.tie_breaker is TieBreaker.UPPER:
            bucket = math.ceil(scaled)
        else:
            floor = math.floor(scaled)
            frac = scaled - floor
            if abs(frac - 0.5) < _EPS:
                bucket = floor if floor % 2 == 0 else floor + 1
            else:
                bucket = floor + 1 if frac > 0.5 else floor
        return min(max(bucket, 0), top)

    def encode_bucket(self, bucket: int) -> bytes:
        """Canonical bytes of a symbol: big-endian, exactly ``encoded_len_bytes`` long."""
        if not (_is_uint(bucket, _U32_MAX) and bucket < self.num_symbols):
            raise InvalidArgument("bucket out of range for this resolution")
        return bucket.to_bytes(self.encoded_len_bytes, "big")

    def decode_bucket(self, data: bytes) -> int:
        """Symbol of canonical bytes; anything non-canonical raises InvalidCanonicalEncoding.

        Wrong length (no padding, no truncation), unused high bits set, or a value
        ``>= num_symbols`` are all refused. Call this before any charge (spec 30 §2.3).
        """
        if len(data) != self.encoded_len_bytes:
            raise InvalidCanonicalEncoding("canonical output length mismatch")
        unused = 8 * self.encoded_len_bytes - self.bit_width
        if unused and data[0] >> (8 - unused):
            raise InvalidCanonicalEncoding("canonical symbol out of range")
        value = int.from_bytes(data, "big")
        if value >= self.num_symbols:
            raise InvalidCanonicalEncoding("canonical symbol out of range")
        return value

    def is_ttl_expired(self, now_epoch: int) -> bool:
        """``ttl`` set and ``max(0, now - calibrated_at) >= ttl``: ttl 0 always, None never."""
        if self.ttl_epochs is None:
            return False
        return max(0, now_epoch - self.calibrated_at_epoch) >= self.ttl_epochs

    def to_json(self) -> dict[str, Any]:
        """serde's JSON shape, in hashing order (byte arrays as integer lists)."""
        return {
            "num_symbols": self.num_symbols,
            "bit_width": self.bit_width,
            "codec_hash": list(self.codec_hash),
            "calibration_manifest_hash": list(self.calibration_manifest_hash),
            "calibrated_at_epoch": self.calibrated_at_epoch,
            "ttl_epochs": self.ttl_epochs,
            "delta_sigma": self.delta_sigma,
            "tie_breaker": self.tie_breaker.value,
            "locality_policy": _locality_to_json(self.locality_policy),
        }

    @classmethod
    def from_json(cls, data: Any) -> OracleResolution:
        """Parse the serde shape; a ``bit_width`` that disagrees with ``num_symbols`` is refused.

        ``locality_policy`` may be absent (serde default: Hamming 1).
        """
        required = {
            "num_symbols",
            "bit_width",
            "codec_hash",
            "calibration_manifest_hash",
            "calibrated_at_epoch",
            "ttl_epochs",
            "delta_sigma",
            "tie_breaker",
        }
        if not isinstance(data, Mapping) or not (
            required <= set(data) <= required | {"locality_policy"}
        ):
            raise InvalidArgument("oracle resolution JSON has missing or unknown fields")
        hashes = []
        for name in ("codec_hash", "calibration_manifest_hash"):
            raw = data[name]
            if not (
                isinstance(raw, list) and len(raw) == 32 and all(_is_uint(b, 255) for b in raw)
            ):
                raise InvalidArgument(f"{name} must be 32 byte values")
            hashes.append(bytes(raw))
        delta_sigma = data["delta_sigma"]
        if not isinstance(delta_sigma, (int, float)) or isinstance(delta_sigma, bool):
            raise InvalidArgument("delta_sigma must be a number")
        try:
            tie_breaker = TieBreaker(data["tie_breaker"])
        except ValueError:
            raise InvalidArgument("unknown tie_breaker") from None
        resolution = cls(
            num_symbols=data["num_symbols"],
            delta_sigma=float(delta_sigma),
            codec_hash=hashes[0],
            calibration_manifest_hash=hashes[1],
            calibrated_at_epoch=data["calibrated_at_epoch"],
            ttl_epochs=data["ttl_epochs"],
            tie_breaker=tie_breaker,
            locality_policy=_locality_from_json(
                data.get("locality_policy", {"hamming": {"max_bits": 1}})
            ),
        )
        if data["bit_width"] != resolution.bit_width:
            raise InvalidArgument("bit_width does not match num_symbols")
        return resolution


def compute_resolution_json_bytes(resolution: OracleResolution) -> bytes:
    """The exact bytes the resolution hash covers: serde's compact JSON in field order.

    Floats use serde's (ryu) layout, not Python's repr (``1e-7`` not ``1e-07``; spec 30 §2.6).
    """
    doc = resolution.to_json()
    parts = []
    for key, value in doc.items():
        text = _format_rust_f64(float(value)) if key == "delta_sigma" else _compact_json(value)
        parts.append(f'"{key}":{text}')
    return ("{" + ",".join(parts) + "}").encode()


def _compact_json(value: Any) -> str:
    """Compact JSON for the integer/string/list/object members of a resolution."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        raise InvalidArgument("unexpected boolean in a resolution")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_compact_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f'"{k}":{_compact_json(v)}' for k, v in value.items()) + "}"
    raise InvalidArgument("unexpected value in a resolution")


def compute_resolution_hash(resolution: OracleResolution) -> bytes:
    """SHA-256 of :func:`compute_resolution_json_bytes`; pinned at freeze, checked at execute."""
    return hashlib.sha256(compute_resolution_json_bytes(resolution)).digest()


@functools.lru_cache(maxsize=64, typed=True)
def compute_default_resolution_hash(num_symbols: int) -> bytes:
    """``compute_resolution_hash(OracleResolution(num_symbols=num_symbols))``, memoised per
    symbol count: a claim's resolution is the default one, which only ``num_symbols`` sets.
    ``typed``: ``4`` and ``4.0`` (or ``True`` and ``1``) are different keys, and an invalid
    count raises every time (exceptions are not cached)."""
    return compute_resolution_hash(OracleResolution(num_symbols=num_symbols))


def compute_calibration_manifest_hash(manifest: bytes) -> bytes:
    """SHA-256 of the raw calibration manifest file bytes (spec 50 §4, ``oracle set``)."""
    return hashlib.sha256(manifest).digest()


def verify_calibration_hash(contract_hash: bytes | None, claim_hash: bytes) -> None:
    """A NullSpec contract that names a calibration hash must match the claim's (spec 30 §3.3).

    Raises FailedPrecondition (incident ``nullspec_calibration_hash_mismatch``) on mismatch; a
    contract without a calibration hash accepts any claim.
    """
    if contract_hash is not None and contract_hash != claim_hash:
        raise FailedPrecondition("nullspec calibration hash mismatch")


# --------------------------------------------------------------------------------------------
# TTL predicates (spec 30 §2.5): three different comparisons, kept apart on purpose


def is_pins_stale(pinned_epoch: int, ttl_epochs: int, now_epoch: int) -> bool:
    """Claim pins are stale when ``now - pinned_epoch > ttl`` (strict): re-freeze first."""
    return max(0, now_epoch - pinned_epoch) > ttl_epochs


def is_nullspec_expired(epoch_created: int, ttl_epochs: int, now_epoch: int) -> bool:
    """A NullSpec contract expires when ``now > epoch_created + ttl`` (strict, saturating add)."""
    return now_epoch > min(epoch_created + ttl_epochs, _U64_MAX)


# --------------------------------------------------------------------------------------------
# Pins (spec 30 §2.6, spec 20 §6.2)


@dataclass(frozen=True, slots=True)
class OraclePins:
    """What a sealed claim pins about its oracle; the execute path re-derives and compares."""

    codec_hash: bytes
    bit_width: int
    ttl_epochs: int
    pinned_epoch: int
    oracle_resolution_hash: bytes

    def __post_init__(self) -> None:
        if not (_bytes32(self.codec_hash) and _bytes32(self.oracle_resolution_hash)):
            raise InvalidArgument("pins hashes must be 32 bytes")
        if not (
            _is_uint(self.bit_width, _U32_MAX)
            and _is_uint(self.ttl_epochs, _U64_MAX)
            and _is_uint(self.pinned_epoch, _U64_MAX)
        ):
            raise InvalidArgument("pins bit_width, ttl_epochs and pinned_epoch must be unsigned")

    @classmethod
    def create(cls, resolution: OracleResolution, ttl_epochs: int, pinned_epoch: int) -> OraclePins:
        """Pins for a freeze: the pins codec hash, minimal bit width, the resolution's hash."""
        return cls(
            codec_hash=PINS_CODEC_HASH,
            bit_width=resolution.bit_width,
            ttl_epochs=ttl_epochs,
            pinned_epoch=pinned_epoch,
            oracle_resolution_hash=compute_resolution_hash(resolution),
        )

    @classmethod
    def for_default_resolution(
        cls, num_symbols: int, ttl_epochs: int, pinned_epoch: int
    ) -> OraclePins:
        """``create(OracleResolution(num_symbols=num_symbols), ...)``, with the resolution hash
        from :func:`compute_default_resolution_hash`."""
        resolution_hash = compute_default_resolution_hash(num_symbols)
        return cls(
            codec_hash=PINS_CODEC_HASH,
            bit_width=(num_symbols - 1).bit_length(),
            ttl_epochs=ttl_epochs,
            pinned_epoch=pinned_epoch,
            oracle_resolution_hash=resolution_hash,
        )

    def is_stale(self, now_epoch: int) -> bool:
        """See :func:`is_pins_stale`."""
        return is_pins_stale(self.pinned_epoch, self.ttl_epochs, now_epoch)

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict; hashes as lowercase hex."""
        return {
            "codec_hash_hex": self.codec_hash.hex(),
            "bit_width": self.bit_width,
            "ttl_epochs": self.ttl_epochs,
            "pinned_epoch": self.pinned_epoch,
            "oracle_resolution_hash_hex": self.oracle_resolution_hash.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> OraclePins:
        """Parse :meth:`to_json` output; malformed input raises InvalidArgument."""
        keys = {"codec_hash_hex", "bit_width", "ttl_epochs", "pinned_epoch"}
        keys.add("oracle_resolution_hash_hex")
        if not isinstance(data, Mapping) or set(data) != keys:
            raise InvalidArgument("oracle pins JSON must have exactly the pins fields")
        try:
            codec = bytes.fromhex(data["codec_hash_hex"])
            resolution_hash = bytes.fromhex(data["oracle_resolution_hash_hex"])
        except (TypeError, ValueError):
            raise InvalidArgument("oracle pins hashes must be hex") from None
        return cls(
            codec_hash=codec,
            bit_width=data["bit_width"],
            ttl_epochs=data["ttl_epochs"],
            pinned_epoch=data["pinned_epoch"],
            oracle_resolution_hash=resolution_hash,
        )


def compute_oracle_pins_hash(pins: OraclePins) -> bytes:
    """``H(codec || u32be(bit_width) || u64be(ttl) || u64be(pinned_epoch) || resolution_hash)``."""
    return hashlib.sha256(
        pins.codec_hash
        + struct.pack(">IQQ", pins.bit_width, pins.ttl_epochs, pins.pinned_epoch)
        + pins.oracle_resolution_hash
    ).digest()


# --------------------------------------------------------------------------------------------
# Accuracy oracle, locality and hysteresis (spec 30 §2.4, §2.7)


def compute_accuracy(labels: bytes, predictions: bytes) -> float:
    """Fraction of rows where the prediction equals the label; the only scoring of guest data.

    Labels must be non-empty and binary; predictions must be binary and as long as the labels.
    """
    if type(labels) is bytes and type(predictions) is bytes:
        # Same checks, same count, in C: deleting the bytes 0 and 1 leaves nothing of a binary
        # vector, and for binary vectors the rows that differ are the set bits of their XOR.
        if not labels or labels.translate(None, _BINARY):
            raise InvalidArgument("holdout labels must be non-empty and binary")
        if len(predictions) != len(labels):
            raise InvalidArgument("prediction length does not match the holdout")
        if predictions.translate(None, _BINARY):
            raise InvalidArgument("predictions must be binary")
        differ = int.from_bytes(predictions, "big") ^ int.from_bytes(labels, "big")
        return (len(labels) - differ.bit_count()) / len(labels)
    if not labels or any(b > 1 for b in labels):
        raise InvalidArgument("holdout labels must be non-empty and binary")
    if len(predictions) != len(labels):
        raise InvalidArgument("prediction length does not match the holdout")
    if any(b > 1 for b in predictions):
        raise InvalidArgument("predictions must be binary")
    correct = sum(1 for p, y in zip(predictions, labels, strict=True) if p == y)
    return correct / len(labels)


_BINARY = b"\x00\x01"


def _shared_prefix_bits(a: bytes, b: bytes) -> int:
    count = 0
    for x, y in zip(a, b, strict=True):
        diff = x ^ y
        if diff == 0:
            count += 8
            continue
        return count + 8 - diff.bit_length()
    return count


def is_local(policy: LocalityPolicy, previous: bytes, current: bytes) -> bool:
    """Whether two prediction vectors are neighbours under ``policy`` (spec 30 §2.4)."""
    if isinstance(policy, Hamming):
        if len(previous) != len(current):
            raise InvalidArgument("hamming distance needs equal-length vectors")
        distance = sum(1 for x, y in zip(previous, current, strict=True) if x != y)
        return distance <= policy.max_bits
    if isinstance(policy, BucketRadius):
        a = int.from_bytes(hashlib.sha256(previous).digest()[:8], "big")
        b = int.from_bytes(hashlib.sha256(current).digest()[:8], "big")
        return abs(a - b) <= policy.r
    if isinstance(policy, ExactMatchOnly):
        return previous == current
    if policy.prefix_bits > 256:
        raise InvalidArgument("prefix_bits must be <= 256")
    a_hash = hashlib.sha256(policy.salt + previous).digest()
    b_hash = hashlib.sha256(policy.salt + current).digest()
    return _shared_prefix_bits(a_hash, b_hash) >= policy.prefix_bits


@dataclass(frozen=True, slots=True)
class HysteresisState:
    """The previous query of one execution (nothing carries over between executions)."""

    last_predictions: bytes | None = None
    last_raw: float | None = None
    last_bucket: int | None = None


@dataclass(frozen=True, slots=True)
class OracleAnswer:
    """One oracle answer: the bucket returned, the raw metric, and the next hysteresis state."""

    bucket: int
    raw_accuracy: float
    hysteresis_applied: bool
    state: HysteresisState


def compute_oracle_answer(
    resolution: OracleResolution,
    labels: bytes,
    predictions: bytes,
    state: HysteresisState,
) -> OracleAnswer:
    """Score, quantise and apply hysteresis to one query (spec 30 §2.4, §2.7).

    If the query is local to the previous one and the raw metric moved by strictly less than
    ``delta_sigma``, the previous bucket is repeated, so tiny probes learn nothing new. The new
    raw value is stored even when the bucket is held.
    """
    raw = compute_accuracy(labels, predictions)
    bucket = resolution.quantize(raw)
    local = state.last_predictions is not None and is_local(
        resolution.locality_policy, state.last_predictions, predictions
    )
    applied = (
        local
        and state.last_raw is not None
        and state.last_bucket is not None
        and abs(raw - state.last_raw) < resolution.delta_sigma
    )
    out = state.last_bucket if applied and state.last_bucket is not None else bucket
    return OracleAnswer(
        bucket=out,
        raw_accuracy=raw,
        hysteresis_applied=applied,
        state=HysteresisState(last_predictions=predictions, last_raw=raw, last_bucket=out),
    )
