"""Request authentication, caller identity and role checks (pure).

Sources: spec 60 §3 (the request guard: bearer, role tokens, HMAC request signing), §3.4.2 (signing
material), §3.4.3 (verification order and messages), §3.4.6 (keyring format), §4.1 (identity) and
§4.3 (authorization); DESIGN §6 and §9 (real method path, ``hmac:`` + SHA-256(key id), replay
cache keyed on the whole signature, roles only from server-side configuration, constant-time
comparisons).

Nothing here reads a clock, the environment or a socket: the transport passes the metadata, the
method path, the current Unix time and the *verified* peer certificate in. No error message, log
field or ``repr`` produced here contains a token, secret or signature.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import heapq
import hmac
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evidenceos.errors import (
    ConfigError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from evidenceos.ids import PrincipalId

__all__ = [
    "ANONYMOUS",
    "DEFAULT_KEY_ID",
    "DEFAULT_REPLAY_CACHE_ENTRIES",
    "HEADER_AUTHORIZATION",
    "HEADER_KEY_ID",
    "HEADER_REQUEST_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_CLOCK_SKEW_S",
    "AuthConfig",
    "CallerIdentity",
    "GuardResult",
    "HmacAuth",
    "HmacKeyring",
    "IdentityPolicy",
    "NoAuth",
    "PeerCertificate",
    "ReplayCache",
    "RequestGuard",
    "Role",
    "RoleTokenAuth",
    "SignedRequest",
    "SingleTokenAuth",
    "build_auth_config",
    "compute_signature_header",
    "compute_signing_material",
    "derive_caller_identity",
    "hash_principal_id",
    "headers_from_metadata",
    "parse_hmac_headers",
    "parse_hmac_keyring",
    "parse_operator_cert_fingerprints",
    "parse_operator_principals",
    "parse_role_tokens",
    "verify_auditor_role",
    "verify_claim_access",
    "verify_hmac_signature",
    "verify_operator_role",
]

# --- wire constants (spec 60 §3.4.1) -------------------------------------------------------------

HEADER_AUTHORIZATION: Final = "authorization"
HEADER_REQUEST_ID: Final = "x-request-id"
HEADER_SIGNATURE: Final = "x-evidenceos-signature"
HEADER_TIMESTAMP: Final = "x-evidenceos-timestamp"
HEADER_KEY_ID: Final = "x-evidenceos-key-id"

#: Fixed, not configurable (spec 60 §3.4.4). A difference of exactly this many seconds passes.
MAX_CLOCK_SKEW_S: Final = 300
DEFAULT_KEY_ID: Final = "default"
ANONYMOUS: Final = PrincipalId("anonymous")

_MAX_HEADER_ID_LEN: Final = 128
_SIGNATURE_PREFIX: Final = "sha256="
_BEARER_PREFIX: Final = "Bearer "
_MAC_LEN: Final = 32
_U64_MAX: Final = 2**64 - 1
_U64_MAX_DIGITS: Final = len(str(_U64_MAX))
_DIGITS: Final = re.compile(r"[0-9]+")
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")

# Default bound of the replay cache. One entry costs a few hundred bytes, so this is tens of MB at
# most; at 300 s per entry it admits ~330 distinct signed requests per second before refusing.
DEFAULT_REPLAY_CACHE_ENTRIES: Final = 100_000


class Role(enum.Enum):
    """Caller roles, weakest first (spec 60 §4.1)."""

    AGENT = "agent"
    AUDITOR = "auditor"
    OPERATOR = "operator"

    @property
    def rank(self) -> int:
        """Strength for combining roles from several verified sources (higher wins)."""
        return _ROLE_RANK[self]


_ROLE_RANK: Final = {Role.AGENT: 0, Role.AUDITOR: 1, Role.OPERATOR: 2}


def _strongest(*roles: Role) -> Role:
    return max(roles, key=lambda r: r.rank)


# --- header text rules ---------------------------------------------------------------------------


def _is_header_text(value: str) -> bool:
    """True if an HTTP/2 header value is readable text (visible ASCII, space, tab).

    Mirrors what the reference accepts as a string header; anything else counts as "not ASCII".
    """
    return all(c == "\t" or " " <= c <= "~" for c in value)


def _is_header_id(value: str) -> bool:
    """1 to 128 bytes, each in 0x21..0x7E, no ``:`` (request id and key id, spec 60 §3.4.1)."""
    return (
        0 < len(value) <= _MAX_HEADER_ID_LEN
        and all("!" <= c <= "~" for c in value)
        and ":" not in value
    )


def headers_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """Collapse gRPC invocation metadata to one text value per lower-cased key.

    The first occurrence of a key wins (as the reference's ``MetadataMap::get``); binary
    (``-bin``) entries are dropped because no auth header is binary.
    """
    out: dict[str, str] = {}
    for key, value in metadata:
        k = key.lower()
        if k.endswith("-bin") or not isinstance(value, str) or k in out:
            continue
        out[k] = value
    return out


# --- HMAC signing (spec 60 §3.4.2) ---------------------------------------------------------------


def compute_signing_material(request_id: str, path: str, timestamp: str | None) -> bytes:
    """Bytes the client signs: ``<request_id>:<path>[:<timestamp>]`` exactly, no newline.

    ``request_id`` and ``timestamp`` are the header values as sent; ``path`` is the full gRPC
    method path (``/evidenceos.v2.EvidenceOS/CreateClaimV2``).
    """
    text = f"{request_id}:{path}" if timestamp is None else f"{request_id}:{path}:{timestamp}"
    return text.encode("utf-8")


def _mac(secret: bytes, material: bytes) -> bytes:
    return hmac.new(secret, material, hashlib.sha256).digest()


def compute_signature_header(secret: bytes, material: bytes) -> str:
    """The ``x-evidenceos-signature`` value: ``sha256=`` + 64 lowercase hex digits."""
    return _SIGNATURE_PREFIX + _mac(secret, material).hex()


# --- keyring (spec 60 §3.4.6) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HmacKeyring:
    """Key id → secret bytes. The secrets never appear in ``repr`` or error text."""

    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("HMAC keyring must define at least one key")
        for key_id, secret in self.keys.items():
            if not key_id:
                raise ConfigError("HMAC keyring key-id must not be empty")
            if not secret:
                raise ConfigError("HMAC keyring secret must not be empty")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Configured key ids, sorted (key ids are not secret)."""
        return tuple(sorted(self.keys))

    def unreachable_key_ids(self) -> tuple[str, ...]:
        """Key ids that no ``x-evidenceos-key-id`` header can carry; worth a start-up warning."""
        return tuple(k for k in self.key_ids if not _is_header_id(k))


def _decode_hex_strict(text: str) -> bytes | None:
    """Hex decode with no whitespace or separators tolerated (unlike ``bytes.fromhex``)."""
    if not text.isascii():
        return None
    try:
        return binascii.a2b_hex(text)
    except (binascii.Error, ValueError):
        return None


def parse_hmac_keyring(raw: str) -> HmacKeyring:
    """Parse ``EVIDENCEOS_HMAC_KEYS`` = ``kid:hexsecret[,kid:hexsecret...]``.

    Rules and message texts follow spec 60 §3.4.6 in its order; each message also names the
    1-based position of the offending comma-separated entry, never its content.
    """
    keys: dict[str, bytes] = {}
    for position, item in enumerate(raw.split(","), start=1):
        entry = item.strip()
        if not entry:
            continue
        where = f" (entry {position})"
        key_id, sep, secret_hex = entry.partition(":")
        if not sep:
            raise ConfigError("EVIDENCEOS_HMAC_KEYS entries must use kid:hexsecret format" + where)
        key_id = key_id.strip()
        if not key_id:
            raise ConfigError("EVIDENCEOS_HMAC_KEYS key-id must not be empty" + where)
        secret = _decode_hex_strict(secret_hex.strip())
        if secret is None:
            raise ConfigError("EVIDENCEOS_HMAC_KEYS secrets must be valid hex" + where)
        if not secret:
            raise ConfigError("EVIDENCEOS_HMAC_KEYS secret must not be empty" + where)
        if key_id in keys:
            raise ConfigError("EVIDENCEOS_HMAC_KEYS contains duplicate key-id" + where)
        keys[key_id] = secret
    if not keys:
        raise ConfigError("EVIDENCEOS_HMAC_KEYS must define at least one key")
    return HmacKeyring(keys)


# --- auth configuration (spec 60 §3.1, §1.5.2) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoAuth:
    """No guard credential required; every caller is an agent (spec 60 §3.1 case 6)."""


@dataclass(frozen=True, slots=True)
class SingleTokenAuth:
    """``--auth-token``: one shared bearer token; every holder is an auditor (spec 60 §3.2)."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError("--auth-token must not be empty")


@dataclass(frozen=True, slots=True)
class RoleTokenAuth:
    """``--agent-tokens``/``--auditor-tokens`` (spec 60 §3.3). A token in both sets is auditor."""

    agent_tokens: tuple[str, ...] = field(repr=False)
    auditor_tokens: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.agent_tokens and not self.auditor_tokens:
            raise ConfigError("role-token auth needs at least one token")
        if any(not t for t in (*self.agent_tokens, *self.auditor_tokens)):
            raise ConfigError("role token lists must not contain empty entries")


@dataclass(frozen=True, slots=True)
class HmacAuth:
    """HMAC request signing (spec 60 §3.4). ``require_timestamp`` is production mode."""

    keyring: HmacKeyring
    require_timestamp: bool = False


AuthConfig = NoAuth | SingleTokenAuth | RoleTokenAuth | HmacAuth


def parse_role_tokens(values: Sequence[str]) -> tuple[str, ...]:
    """Split repeated ``--agent-tokens``/``--auditor-tokens`` values on ``,`` and trim each.

    An empty entry anywhere is refused (``role token lists must not contain empty entries``).
    """
    tokens: list[str] = []
    for value in values:
        for part in value.split(","):
            token = part.strip()
            if not token:
                raise ConfigError("role token lists must not contain empty entries")
            tokens.append(token)
    return tuple(tokens)


def build_auth_config(
    *,
    auth_token: str | None,
    auth_hmac_key: str | None,
    agent_tokens: Sequence[str] = (),
    auditor_tokens: Sequence[str] = (),
    env: Mapping[str, str],
    production_mode: bool,
) -> AuthConfig:
    """Choose the guard mode from flags and env, refusing contradictory combinations.

    Checks run in the reference's order with its messages (spec 60 §1.5.2, §3.1); the TLS
    combination checks live with the transport configuration. ``agent_tokens`` and
    ``auditor_tokens`` are the raw (possibly repeated, comma-separated) flag values.
    """
    hmac_keys_env = env.get("EVIDENCEOS_HMAC_KEYS")
    shared_secret_env = env.get("EVIDENCEOS_HMAC_SHARED_SECRET")
    hmac_env_set = hmac_keys_env is not None or shared_secret_env is not None
    hmac_env_names = "EVIDENCEOS_HMAC_KEYS/EVIDENCEOS_HMAC_SHARED_SECRET"
    has_agent = len(agent_tokens) > 0
    has_auditor = len(auditor_tokens) > 0

    if auth_token is not None and auth_hmac_key is not None:
        raise ConfigError("--auth-token and --auth-hmac-key are mutually exclusive")
    if auth_token is not None and hmac_env_set:
        raise ConfigError(f"--auth-token is mutually exclusive with {hmac_env_names}")
    if auth_token is not None and (has_agent or has_auditor):
        raise ConfigError("--auth-token is mutually exclusive with --agent-tokens/--auditor-tokens")
    for flag, present in (("--agent-tokens", has_agent), ("--auditor-tokens", has_auditor)):
        if present and auth_hmac_key is not None:
            raise ConfigError(f"{flag} and --auth-hmac-key are mutually exclusive")
        if present and hmac_env_set:
            raise ConfigError(f"{flag} and {hmac_env_names} are mutually exclusive")

    if has_agent or has_auditor:
        return RoleTokenAuth(
            agent_tokens=parse_role_tokens(agent_tokens),
            auditor_tokens=parse_role_tokens(auditor_tokens),
        )

    keyring = parse_hmac_keyring(hmac_keys_env) if hmac_keys_env is not None else None
    if shared_secret_env is not None and not shared_secret_env:
        raise ConfigError("EVIDENCEOS_HMAC_SHARED_SECRET must not be empty")
    shared_secret = shared_secret_env.encode("utf-8") if shared_secret_env else None

    if auth_token is not None:
        return SingleTokenAuth(auth_token)
    if auth_hmac_key is not None:
        if keyring is not None:
            raise ConfigError("--auth-hmac-key and EVIDENCEOS_HMAC_KEYS are mutually exclusive")
        if not auth_hmac_key:
            raise ConfigError("--auth-hmac-key must not be empty")
        # Reference quirk kept: EVIDENCEOS_HMAC_SHARED_SECRET is ignored next to --auth-hmac-key.
        return HmacAuth(
            HmacKeyring({DEFAULT_KEY_ID: auth_hmac_key.encode("utf-8")}),
            require_timestamp=production_mode,
        )
    if keyring is not None:
        if shared_secret is not None:
            if DEFAULT_KEY_ID in keyring.keys:
                raise ConfigError(
                    "EVIDENCEOS_HMAC_SHARED_SECRET cannot override default key in "
                    "EVIDENCEOS_HMAC_KEYS"
                )
            keyring = HmacKeyring({**keyring.keys, DEFAULT_KEY_ID: shared_secret})
        return HmacAuth(keyring, require_timestamp=production_mode)
    if shared_secret is not None:
        return HmacAuth(
            HmacKeyring({DEFAULT_KEY_ID: shared_secret}), require_timestamp=production_mode
        )
    return NoAuth()


# --- HMAC verification (spec 60 §3.4.3) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The HMAC headers of one call after syntax and clock checks (steps 1 to 5 of §3.4.3)."""

    path: str
    request_id: str
    key_id: str
    timestamp: str | None
    timestamp_s: int | None
    signature: str | None = field(repr=False)

    @property
    def material(self) -> bytes:
        """The signing material this request must have been signed over."""
        return compute_signing_material(self.request_id, self.path, self.timestamp)


def parse_hmac_headers(
    headers: Mapping[str, str], path: str, *, now: int, require_timestamp: bool
) -> SignedRequest:
    """Read and check the HMAC headers up to (not including) the key lookup.

    Raises :class:`Unauthenticated` with the spec 60 §3.4.3 message of the first failing step:
    method path, request id, key id, timestamp syntax, clock skew (±300 s, inclusive), missing
    timestamp when ``require_timestamp``.
    """
    if not path or path == "unknown":
        raise Unauthenticated("missing grpc method")

    request_id = headers.get(HEADER_REQUEST_ID)
    if request_id is None or not _is_header_text(request_id):
        raise Unauthenticated("missing x-request-id")
    if not _is_header_id(request_id):
        raise Unauthenticated("invalid x-request-id")

    key_id = headers.get(HEADER_KEY_ID, DEFAULT_KEY_ID)
    if not _is_header_id(key_id):
        raise Unauthenticated("invalid x-evidenceos-key-id")

    timestamp = headers.get(HEADER_TIMESTAMP)
    timestamp_s: int | None = None
    if timestamp is not None:
        # Length bound before int(): u64 has at most 20 significant digits, and Python refuses
        # to convert very long digit strings.
        if (
            not _DIGITS.fullmatch(timestamp)
            or len(timestamp.lstrip("0")) > _U64_MAX_DIGITS
            or int(timestamp) > _U64_MAX
        ):
            raise Unauthenticated("invalid x-evidenceos-timestamp")
        timestamp_s = int(timestamp)
        if abs(now - timestamp_s) > MAX_CLOCK_SKEW_S:
            raise Unauthenticated("timestamp skew too large")
    elif require_timestamp:
        raise Unauthenticated("missing x-evidenceos-timestamp")

    return SignedRequest(
        path=path,
        request_id=request_id,
        key_id=key_id,
        timestamp=timestamp,
        timestamp_s=timestamp_s,
        signature=headers.get(HEADER_SIGNATURE),
    )


def _decode_signature(signed: SignedRequest) -> bytes:
    header = signed.signature
    if header is None:
        raise Unauthenticated("missing x-evidenceos-signature")
    if not _is_header_text(header):
        raise Unauthenticated("invalid x-evidenceos-signature")
    if not header.startswith(_SIGNATURE_PREFIX):
        raise Unauthenticated("invalid signature")
    provided = _decode_hex_strict(header[len(_SIGNATURE_PREFIX) :])
    if provided is None or len(provided) != _MAC_LEN:
        raise Unauthenticated("invalid signature")
    return provided


def _verified_mac(keyring: HmacKeyring, signed: SignedRequest) -> bytes:
    secret = keyring.keys.get(signed.key_id)
    if secret is None:
        raise Unauthenticated("unknown x-evidenceos-key-id")
    provided = _decode_signature(signed)
    if not hmac.compare_digest(_mac(secret, signed.material), provided):
        raise Unauthenticated("invalid signature")
    return provided


def verify_hmac_signature(keyring: HmacKeyring, signed: SignedRequest) -> None:
    """Steps 6 to 8 of spec 60 §3.4.3: known key id, signature present and well formed, MAC match.

    The MAC comparison is constant-time (``hmac.compare_digest``); messages never include the
    signature.
    """
    _verified_mac(keyring, signed)


class ReplayCache:
    """Refuses a byte-identical HMAC request seen before within its validity window (DESIGN §9).

    Keyed on the whole signature: ``(key id, MAC)``, and the MAC binds request id, method path and
    timestamp. A signed timestamp ``ts`` is valid while ``now <= ts + 300``; the entry is kept
    exactly that long, after which the skew check refuses the replay anyway. A request signed
    without a timestamp (allowed outside production mode) is remembered for 300 s from its first
    use only, since remembering it forever would need unbounded memory.

    Memory is bounded by ``max_entries``: when the cache is still full after dropping expired
    entries, new requests are refused with :class:`ResourceExhausted` rather than evicting live
    entries (evicting would re-open the replay window). Expiry is driven only by the ``now``
    passed in; it never reads a clock. Safe to share between threads.
    """

    __slots__ = ("_entries", "_expiry_heap", "_lock", "_max_entries", "_window_s")

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_REPLAY_CACHE_ENTRIES,
        window_s: int = MAX_CLOCK_SKEW_S,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self._max_entries = max_entries
        self._window_s = window_s
        self._entries: dict[tuple[str, bytes], int] = {}
        self._expiry_heap: list[tuple[int, tuple[str, bytes]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _purge(self, now: int) -> None:
        heap = self._expiry_heap
        while heap and heap[0][0] < now:
            expires_at, key = heapq.heappop(heap)
            if self._entries.get(key) == expires_at:
                del self._entries[key]

    def purge(self, *, now: int) -> None:
        """Drop entries whose window ended before ``now``."""
        with self._lock:
            self._purge(now)

    def check_and_record(
        self, key_id: str, mac: bytes, *, timestamp_s: int | None, now: int
    ) -> None:
        """Record a verified signature; raise if it was already used and is still live.

        Call only after the signature verified, so unauthenticated traffic cannot fill the cache.
        """
        key = (key_id, bytes(mac))
        base = now if timestamp_s is None else timestamp_s
        expires_at = base + self._window_s
        with self._lock:
            self._purge(now)
            if key in self._entries:
                raise Unauthenticated("replayed request")
            if len(self._entries) >= self._max_entries:
                raise ResourceExhausted("too many signed requests in flight; retry later")
            self._entries[key] = expires_at
            heapq.heappush(self._expiry_heap, (expires_at, key))


# --- bearer tokens (spec 60 §3.2, §3.3) ----------------------------------------------------------


def _token_digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest constant-time and hides token lengths.
    return hashlib.sha256(token.encode("utf-8")).digest()


def _read_bearer(headers: Mapping[str, str]) -> str:
    value = headers.get(HEADER_AUTHORIZATION)
    if value is None:
        raise Unauthenticated("missing authorization")
    if not _is_header_text(value):
        raise Unauthenticated("invalid authorization header")
    if not value.startswith(_BEARER_PREFIX):
        raise Unauthenticated("invalid bearer token")
    return value[len(_BEARER_PREFIX) :]


def _match_tokens(provided: bytes, digests: Sequence[bytes]) -> bool:
    """Compare against every configured digest, without stopping at the first match."""
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(provided, digest)
    return matched


def hash_principal_id(scheme: str, value: str) -> PrincipalId:
    """``<scheme>:`` + lowercase hex SHA-256 of the UTF-8 bytes of ``value`` (spec 60 §4.1)."""
    return PrincipalId(f"{scheme}:{hashlib.sha256(value.encode('utf-8')).hexdigest()}")


# --- the guard -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardResult:
    """What the guard verified: the role it grants and the principal of the credential, if any."""

    role: Role
    principal_id: PrincipalId | None


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The client certificate the TLS layer verified (never a client-sent header; DESIGN §6).

    ``fingerprint`` is the lowercase hex SHA-256 of the leaf certificate's DER bytes; ``san`` is
    its first subject alternative name, or ``""``. A certificate that cannot be read refuses the
    call (UNAUTHENTICATED): the caller cannot be identified.
    """

    fingerprint: str
    san: str = ""

    def __post_init__(self) -> None:
        if not _FINGERPRINT.fullmatch(self.fingerprint):
            raise Unauthenticated("invalid peer certificate: fingerprint must be 64 lowercase hex")

    @classmethod
    def from_der(cls, der: bytes, sans: Sequence[str] = ()) -> PeerCertificate:
        """Build from the DER of the verified leaf and the SAN list the transport reports."""
        return cls(hashlib.sha256(der).hexdigest(), sans[0].strip() if sans else "")

    @classmethod
    def from_pem(cls, pem: bytes, sans: Sequence[str] | None = None) -> PeerCertificate:
        """Build from the PEM of the verified leaf (grpc ``x509_pem_cert``).

        When ``sans`` is ``None`` the first DNS/URI/e-mail SAN is read from the certificate.
        """
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise Unauthenticated("invalid peer certificate: not a PEM certificate") from exc
        der = cert.public_bytes(serialization.Encoding.DER)
        if sans is None:
            sans = _certificate_sans(cert)
        return cls.from_der(der, sans)


def _certificate_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = []
    for general_name in ext.value:
        if isinstance(
            general_name, x509.DNSName | x509.UniformResourceIdentifier | x509.RFC822Name
        ):
            names.append(general_name.value)
    return names


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """Server-side role sources besides role tokens (DESIGN §6, §9).

    ``operator_principals`` (``EVIDENCEOS_OPERATOR_PRINCIPALS``, default empty) and
    ``operator_cert_fingerprints`` (``EVIDENCEOS_OPERATOR_CERT_FINGERPRINTS``) grant the operator
    role.
    """

    operator_principals: frozenset[PrincipalId] = frozenset()
    operator_cert_fingerprints: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IdentityPolicy:
        """Read both lists from an environment mapping."""
        return cls(
            operator_principals=parse_operator_principals(
                env.get("EVIDENCEOS_OPERATOR_PRINCIPALS")
            ),
            operator_cert_fingerprints=parse_operator_cert_fingerprints(
                env.get("EVIDENCEOS_OPERATOR_CERT_FINGERPRINTS")
            ),
        )


def parse_operator_principals(raw: str | None) -> frozenset[PrincipalId]:
    """Comma list, entries trimmed, empty ones dropped. Unset or empty → no operator principals.

    Unlike the reference there is no implicit ``anonymous`` (DESIGN §9).
    """
    if raw is None:
        return frozenset()
    return frozenset(PrincipalId(p.strip()) for p in raw.split(",") if p.strip())


def parse_operator_cert_fingerprints(raw: str | None) -> frozenset[str]:
    """Comma list of SHA-256 DER fingerprints; trimmed, lower-cased, ``:`` separators removed.

    An entry that is then not 64 hex digits could never match a certificate, so it is refused.
    """
    if raw is None:
        return frozenset()
    out: set[str] = set()
    for position, item in enumerate(raw.split(","), start=1):
        fp = item.strip().lower().replace(":", "")
        if not fp:
            continue
        if not _FINGERPRINT.fullmatch(fp):
            raise ConfigError(
                f"EVIDENCEOS_OPERATOR_CERT_FINGERPRINTS entry {position} is not a SHA-256 "
                "fingerprint (64 hex digits)"
            )
        out.add(fp)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who is calling and with which role (spec 60 §4.1 as amended by DESIGN §6)."""

    principal_id: PrincipalId
    role: Role

    @property
    def is_operator(self) -> bool:
        """Operator role: overrides claim ownership and gates credit administration."""
        return self.role is Role.OPERATOR

    @property
    def is_auditor(self) -> bool:
        """Auditor-or-operator ("auditor role required" checks, spec 60 §4.3)."""
        return self.role is not Role.AGENT


def _certificate_role(peer: PeerCertificate, policy: IdentityPolicy) -> Role:
    san = peer.san.lower()
    if san == "operator" or "role=operator" in san:
        return Role.OPERATOR
    if peer.fingerprint in policy.operator_cert_fingerprints:
        return Role.OPERATOR
    if "role=auditor" in san:
        return Role.AUDITOR
    return Role.AGENT


def derive_caller_identity(
    guard: GuardResult, peer: PeerCertificate | None, policy: IdentityPolicy
) -> CallerIdentity:
    """Combine the verified sources into one identity; no client header is consulted.

    Principal, first match: verified peer certificate → ``mtls:`` + H(SAN or fingerprint); the
    guard's credential (``bearer:`` + H(token) or ``hmac:`` + H(key id)); else ``anonymous``.
    Role: the strongest of the guard's role, the certificate's role (SAN ``operator`` /
    ``role=operator`` / allow-listed fingerprint → operator, ``role=auditor`` → auditor) and
    operator if the principal is in ``operator_principals``.
    """
    roles = [guard.role]
    if peer is not None:
        principal = hash_principal_id("mtls", peer.san or peer.fingerprint)
        roles.append(_certificate_role(peer, policy))
    elif guard.principal_id is not None:
        principal = guard.principal_id
    else:
        principal = ANONYMOUS
    if principal in policy.operator_principals:
        roles.append(Role.OPERATOR)
    return CallerIdentity(principal_id=principal, role=_strongest(*roles))


class RequestGuard:
    """The per-call authentication step the gRPC interceptor runs (spec 60 §3).

    Holds the immutable auth configuration, the identity policy and, in HMAC mode, the replay
    cache. ``authenticate`` raises :class:`Unauthenticated` (or :class:`ResourceExhausted` when
    the replay cache is full) and otherwise returns the caller's identity.
    """

    __slots__ = ("_agent_digests", "_auditor_digests", "_config", "_policy", "_replay")

    def __init__(
        self,
        config: AuthConfig,
        policy: IdentityPolicy | None = None,
        *,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self._config = config
        self._policy = policy if policy is not None else IdentityPolicy()
        self._replay = replay_cache if replay_cache is not None else ReplayCache()
        self._agent_digests: tuple[bytes, ...] = ()
        self._auditor_digests: tuple[bytes, ...] = ()
        if isinstance(config, SingleTokenAuth):
            self._auditor_digests = (_token_digest(config.token),)
        elif isinstance(config, RoleTokenAuth):
            self._agent_digests = tuple(_token_digest(t) for t in config.agent_tokens)
            self._auditor_digests = tuple(_token_digest(t) for t in config.auditor_tokens)

    @property
    def config(self) -> AuthConfig:
        """The configuration this guard enforces."""
        return self._config

    @property
    def replay_cache(self) -> ReplayCache:
        """The cache of used HMAC signatures (unused in other modes)."""
        return self._replay

    def check(self, headers: Mapping[str, str], path: str, *, now: int) -> GuardResult:
        """Run the guard only: verify the configured credential, return its role and principal."""
        config = self._config
        if isinstance(config, NoAuth):
            return GuardResult(Role.AGENT, _unverified_bearer_principal(headers))
        if isinstance(config, HmacAuth):
            signed = parse_hmac_headers(
                headers, path, now=now, require_timestamp=config.require_timestamp
            )
            mac = _verified_mac(config.keyring, signed)
            self._replay.check_and_record(
                signed.key_id, mac, timestamp_s=signed.timestamp_s, now=now
            )
            return GuardResult(Role.AGENT, hash_principal_id("hmac", signed.key_id))
        token = _read_bearer(headers)
        provided = _token_digest(token)
        is_auditor = _match_tokens(provided, self._auditor_digests)
        is_agent = _match_tokens(provided, self._agent_digests)
        if is_auditor:
            role = Role.AUDITOR
        elif is_agent:
            role = Role.AGENT
        else:
            raise Unauthenticated("invalid bearer token")
        return GuardResult(role, hash_principal_id("bearer", token))

    def authenticate(
        self,
        headers: Mapping[str, str],
        path: str,
        *,
        now: int,
        peer: PeerCertificate | None = None,
    ) -> CallerIdentity:
        """Guard the call and derive the caller identity in one step."""
        return derive_caller_identity(self.check(headers, path, now=now), peer, self._policy)


def _unverified_bearer_principal(headers: Mapping[str, str]) -> PrincipalId | None:
    """Without a guard, a well-formed bearer header still names a principal (spec 60 §4.1 step 2).

    Only the holder of the token can produce that principal; no role is derived from it.
    """
    value = headers.get(HEADER_AUTHORIZATION)
    if value is None or not _is_header_text(value) or not value.startswith(_BEARER_PREFIX):
        return None
    return hash_principal_id("bearer", value[len(_BEARER_PREFIX) :])


# --- authorization (spec 60 §4.3) ----------------------------------------------------------------


def verify_auditor_role(caller: CallerIdentity) -> None:
    """Auditor or operator, else PERMISSION_DENIED ``auditor role required``."""
    if not caller.is_auditor:
        raise PermissionDenied("auditor role required")


def verify_operator_role(caller: CallerIdentity) -> None:
    """Operator role (GrantCredit, SetCreditLimit), else ``operator role required``."""
    if not caller.is_operator:
        raise PermissionDenied("operator role required")


def verify_claim_access(caller: CallerIdentity, owner_principal_id: PrincipalId) -> None:
    """Owner or operator may act on a claim; anyone else is refused with the exact REF text.

    An operator acting on someone else's claim passes; the caller logs
    ``AUTHZ_OPERATOR_OVERRIDE`` when ``caller.principal_id != owner_principal_id``.
    """
    if caller.is_operator or caller.principal_id == owner_principal_id:
        return
    raise PermissionDenied("AUTHZ_CLAIM_OWNER_MISMATCH: caller does not own claim")
