"""Request guard, HMAC verification, replay cache, keyring parsing and identity (spec 60 §3-§4)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.auth import (
    ANONYMOUS,
    AuthConfig,
    CallerIdentity,
    GuardResult,
    HmacAuth,
    HmacKeyring,
    IdentityPolicy,
    NoAuth,
    PeerCertificate,
    ReplayCache,
    RequestGuard,
    Role,
    RoleTokenAuth,
    SingleTokenAuth,
    build_auth_config,
    compute_signature_header,
    compute_signing_material,
    derive_caller_identity,
    hash_principal_id,
    headers_from_metadata,
    parse_hmac_headers,
    parse_hmac_keyring,
    parse_operator_cert_fingerprints,
    parse_operator_principals,
    parse_role_tokens,
    verify_auditor_role,
    verify_claim_access,
    verify_hmac_signature,
    verify_operator_role,
)
from evidenceos.errors import (
    ConfigError,
    EvidenceOSError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from evidenceos.ids import PrincipalId


def error_text(fn: Callable[[], object]) -> str | None:
    """The message of the EvidenceOSError ``fn`` raises, or None if it returns."""
    try:
        fn()
    except EvidenceOSError as err:
        return str(err)
    return None


SECRET = b"hmac-secret"
ROTATING = b"rotating-secret"
HEALTH = "/evidenceos.v1.EvidenceOS/Health"
CREATE = "/evidenceos.v2.EvidenceOS/CreateClaimV2"
NOW = 1_735_689_600

TOP_SECRET_PRINCIPAL = "bearer:190aec7389a3b0b5b6c67ac2756cb7b7bc6e5d936ae83d34f55a150a67a13003"  # noqa: S105
OWNER_PRINCIPAL = "bearer:c32c7bb97d785c65916c05538cfc0f9d94768cb167eb73615071783ccc4bef77"
FP_ABC123_PRINCIPAL = "mtls:6ca13d52ca70c883e0f0bb101e425a89e8624de51db2d2392593af6a84118090"
FP = "ab" * 32


def sign(
    *,
    secret: bytes = SECRET,
    request_id: str = "req-1",
    path: str = HEALTH,
    timestamp: str | None = str(NOW),
    key_id: str | None = None,
) -> dict[str, str]:
    """Headers of a correctly signed request."""
    material = compute_signing_material(request_id, path, timestamp)
    headers = {
        "x-request-id": request_id,
        "x-evidenceos-signature": compute_signature_header(secret, material),
    }
    if timestamp is not None:
        headers["x-evidenceos-timestamp"] = timestamp
    if key_id is not None:
        headers["x-evidenceos-key-id"] = key_id
    return headers


def hmac_guard(*, require_timestamp: bool = False, cache: ReplayCache | None = None):
    keyring = HmacKeyring({"default": SECRET, "kid-2026-01": ROTATING})
    return RequestGuard(HmacAuth(keyring, require_timestamp=require_timestamp), replay_cache=cache)


def refused(guard: RequestGuard, headers, path=HEALTH, now=NOW) -> str:
    with pytest.raises(Unauthenticated) as info:
        guard.authenticate(headers, path, now=now)
    return str(info.value)


# --- signing material -----------------------------------------------------------------------------


def test_material_without_and_with_timestamp():
    assert compute_signing_material("req-123", HEALTH, None) == f"req-123:{HEALTH}".encode()
    assert compute_signing_material("req-123", HEALTH, "10") == f"req-123:{HEALTH}:10".encode()


def test_signature_header_is_lowercase_sha256_hmac():
    material = b"req-1:/p"
    expected = hmac.new(SECRET, material, hashlib.sha256).hexdigest()
    assert compute_signature_header(SECRET, material) == "sha256=" + expected


# --- HMAC verification: happy paths ---------------------------------------------------------------


def test_valid_signature_with_timestamp_is_agent_with_stable_principal():
    guard = hmac_guard()
    first = guard.authenticate(sign(request_id="req-1"), HEALTH, now=NOW)
    second = guard.authenticate(sign(request_id="req-2"), HEALTH, now=NOW)
    assert first == second == CallerIdentity(hash_principal_id("hmac", "default"), Role.AGENT)


def test_rotating_key_id_is_accepted():
    caller = hmac_guard().authenticate(sign(secret=ROTATING, key_id="kid-2026-01"), HEALTH, now=NOW)
    assert caller.principal_id == hash_principal_id("hmac", "kid-2026-01")


def test_signature_without_timestamp_accepted_outside_production():
    hmac_guard().authenticate(sign(timestamp=None), HEALTH, now=NOW)


# --- HMAC verification: refusals, one mutation each -----------------------------------------------


@pytest.mark.parametrize(
    ("skew", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)]
)
def test_clock_skew_window_is_300_seconds_inclusive(skew, ok):
    guard = hmac_guard()
    headers = sign(timestamp=str(NOW - skew))
    if ok:
        guard.authenticate(headers, HEALTH, now=NOW)
    else:
        assert refused(guard, headers) == "timestamp skew too large"


def test_stale_timestamp_far_in_the_past_refused():
    assert refused(hmac_guard(), sign(timestamp="1")) == "timestamp skew too large"


def test_future_timestamp_beyond_window_refused():
    assert refused(hmac_guard(), sign(timestamp=str(NOW + 3600))) == "timestamp skew too large"


def test_signature_for_another_path_refused():
    assert refused(hmac_guard(), sign(path=HEALTH), path=CREATE) == "invalid signature"


def test_signature_with_the_wrong_key_refused():
    headers = sign(secret=ROTATING)  # key id "default" but signed with the other secret
    assert refused(hmac_guard(), headers) == "invalid signature"


def test_unknown_key_id_refused():
    headers = sign(key_id="kid-does-not-exist")
    assert refused(hmac_guard(), headers) == "unknown x-evidenceos-key-id"


def test_production_mode_requires_timestamp():
    guard = hmac_guard(require_timestamp=True)
    assert refused(guard, sign(timestamp=None)) == "missing x-evidenceos-timestamp"
    guard.authenticate(sign(), HEALTH, now=NOW)


def _mutate(headers: dict[str, str], key: str, value: str | None) -> dict[str, str]:
    out = dict(headers)
    if value is None:
        out.pop(key, None)
    else:
        out[key] = value
    return out


GOOD = sign()
GOOD_HEX = GOOD["x-evidenceos-signature"].removeprefix("sha256=")
FLIPPED_HEX = ("1" if GOOD_HEX[0] == "0" else "0") + GOOD_HEX[1:]


@pytest.mark.parametrize(
    ("desc", "key", "value", "message"),
    [
        ("request id missing", "x-request-id", None, "missing x-request-id"),
        ("request id not ascii", "x-request-id", "req-é", "missing x-request-id"),
        ("request id empty", "x-request-id", "", "invalid x-request-id"),
        ("request id has colon", "x-request-id", "a:b", "invalid x-request-id"),
        ("request id has space", "x-request-id", "a b", "invalid x-request-id"),
        ("request id too long", "x-request-id", "r" * 129, "invalid x-request-id"),
        ("key id empty", "x-evidenceos-key-id", "", "invalid x-evidenceos-key-id"),
        ("key id has colon", "x-evidenceos-key-id", "a:b", "invalid x-evidenceos-key-id"),
        ("key id too long", "x-evidenceos-key-id", "k" * 129, "invalid x-evidenceos-key-id"),
        ("key id not ascii", "x-evidenceos-key-id", "kï", "invalid x-evidenceos-key-id"),
        ("timestamp letters", "x-evidenceos-timestamp", "abc", "invalid x-evidenceos-timestamp"),
        ("timestamp empty", "x-evidenceos-timestamp", "", "invalid x-evidenceos-timestamp"),
        (
            "timestamp plus",
            "x-evidenceos-timestamp",
            "+1735689600",
            "invalid x-evidenceos-timestamp",
        ),
        (
            "timestamp space",
            "x-evidenceos-timestamp",
            " 1735689600",
            "invalid x-evidenceos-timestamp",
        ),
        ("timestamp negative", "x-evidenceos-timestamp", "-5", "invalid x-evidenceos-timestamp"),
        ("timestamp > u64", "x-evidenceos-timestamp", "9" * 21, "invalid x-evidenceos-timestamp"),
        ("timestamp huge", "x-evidenceos-timestamp", "9" * 5000, "invalid x-evidenceos-timestamp"),
        (
            "timestamp unicode digits",
            "x-evidenceos-timestamp",
            "١٢",
            "invalid x-evidenceos-timestamp",
        ),
        ("signature missing", "x-evidenceos-signature", None, "missing x-evidenceos-signature"),
        (
            "signature not ascii",
            "x-evidenceos-signature",
            "sha256=é",
            "invalid x-evidenceos-signature",
        ),
        ("no prefix", "x-evidenceos-signature", GOOD_HEX, "invalid signature"),
        ("prefix case", "x-evidenceos-signature", "SHA256=" + GOOD_HEX, "invalid signature"),
        ("odd hex", "x-evidenceos-signature", "sha256=" + GOOD_HEX[:-1], "invalid signature"),
        ("short mac", "x-evidenceos-signature", "sha256=" + GOOD_HEX[:-2], "invalid signature"),
        ("long mac", "x-evidenceos-signature", "sha256=" + GOOD_HEX + "00", "invalid signature"),
        ("non hex", "x-evidenceos-signature", "sha256=" + "zz" * 32, "invalid signature"),
        ("spaced hex", "x-evidenceos-signature", "sha256= " + GOOD_HEX, "invalid signature"),
        ("one digit off", "x-evidenceos-signature", "sha256=" + FLIPPED_HEX, "invalid signature"),
    ],
)
def test_malformed_header_refused(desc, key, value, message):
    headers = _mutate(GOOD, key, value)
    text = refused(hmac_guard(), headers)
    assert text == message, desc
    assert GOOD_HEX not in text
    assert SECRET.decode() not in text


def test_missing_method_path_refused():
    assert refused(hmac_guard(), GOOD, path="") == "missing grpc method"
    assert refused(hmac_guard(), GOOD, path="unknown") == "missing grpc method"


def test_check_order_request_id_before_key_id_before_timestamp():
    guard = hmac_guard()
    both = _mutate(_mutate(GOOD, "x-request-id", "a:b"), "x-evidenceos-key-id", "a:b")
    assert refused(guard, both) == "invalid x-request-id"
    key_and_ts = _mutate(_mutate(GOOD, "x-evidenceos-key-id", ""), "x-evidenceos-timestamp", "x")
    assert refused(guard, key_and_ts) == "invalid x-evidenceos-key-id"


def test_check_order_skew_before_unknown_key_before_signature():
    guard = hmac_guard()
    stale_unknown = sign(timestamp="1", key_id="nope")
    assert refused(guard, stale_unknown) == "timestamp skew too large"
    unknown_unsigned = _mutate(sign(key_id="nope"), "x-evidenceos-signature", None)
    assert refused(guard, unknown_unsigned) == "unknown x-evidenceos-key-id"


def test_parse_then_verify_are_usable_separately():
    signed = parse_hmac_headers(sign(), HEALTH, now=NOW, require_timestamp=True)
    assert signed.key_id == "default"
    assert signed.timestamp_s == NOW
    assert signed.material == f"req-1:{HEALTH}:{NOW}".encode()
    assert GOOD_HEX not in repr(signed)
    verify_hmac_signature(HmacKeyring({"default": SECRET}), signed)
    with pytest.raises(Unauthenticated, match=r"^invalid signature$"):
        verify_hmac_signature(HmacKeyring({"default": b"other"}), signed)


# --- replay ---------------------------------------------------------------------------------------


def test_identical_request_replayed_within_window_is_refused():
    guard = hmac_guard()
    guard.authenticate(GOOD, HEALTH, now=NOW)
    assert refused(guard, GOOD, now=NOW) == "replayed request"
    assert refused(guard, GOOD, now=NOW + 300) == "replayed request"


def test_replay_after_expiry_is_refused_by_the_skew_check():
    guard = hmac_guard()
    guard.authenticate(GOOD, HEALTH, now=NOW)
    assert refused(guard, GOOD, now=NOW + 301) == "timestamp skew too large"
    later = NOW + 301
    guard.authenticate(sign(request_id="req-2", timestamp=str(later)), HEALTH, now=later)
    assert len(guard.replay_cache) == 1  # the expired entry was dropped on the way


@settings(max_examples=200)
@given(
    ts_offset=st.integers(-300, 300),
    steps=st.lists(st.integers(0, 200), min_size=1, max_size=12),
)
def test_replay_is_never_accepted_while_time_moves_forward(ts_offset, steps):
    guard = hmac_guard(cache=ReplayCache(max_entries=4))
    headers = sign(timestamp=str(NOW + ts_offset))
    guard.authenticate(headers, HEALTH, now=NOW)
    now = NOW
    for step in steps:
        now += step
        with pytest.raises(Unauthenticated):
            guard.authenticate(headers, HEALTH, now=now)


def test_retry_with_same_request_id_and_fresh_timestamp_passes():
    guard = hmac_guard()
    guard.authenticate(sign(timestamp=str(NOW)), HEALTH, now=NOW)
    guard.authenticate(sign(timestamp=str(NOW + 1)), HEALTH, now=NOW + 1)


def test_same_request_id_on_another_path_or_key_is_not_a_replay():
    guard = hmac_guard()
    guard.authenticate(sign(path=HEALTH), HEALTH, now=NOW)
    guard.authenticate(sign(path=CREATE), CREATE, now=NOW)
    guard.authenticate(sign(secret=ROTATING, key_id="kid-2026-01"), HEALTH, now=NOW)


def test_timestampless_signature_is_remembered_for_the_window_only():
    guard = hmac_guard()
    headers = sign(timestamp=None)
    guard.authenticate(headers, HEALTH, now=NOW)
    assert refused(guard, headers, now=NOW + 300) == "replayed request"
    guard.authenticate(headers, HEALTH, now=NOW + 301)  # documented limit (no timestamp)


def test_failed_signatures_do_not_enter_the_cache():
    guard = hmac_guard()
    bad = _mutate(GOOD, "x-evidenceos-signature", "sha256=" + "00" * 32)
    for _ in range(3):
        refused(guard, bad)
    assert len(guard.replay_cache) == 0
    guard.authenticate(GOOD, HEALTH, now=NOW)
    assert len(guard.replay_cache) == 1


def test_full_cache_refuses_new_requests_until_entries_expire():
    guard = hmac_guard(cache=ReplayCache(max_entries=2))
    guard.authenticate(sign(request_id="a"), HEALTH, now=NOW)
    guard.authenticate(sign(request_id="b"), HEALTH, now=NOW)
    with pytest.raises(ResourceExhausted):
        guard.authenticate(sign(request_id="c"), HEALTH, now=NOW)
    # the refused request was not recorded, the live entries still block their replays
    assert refused(guard, sign(request_id="a"), now=NOW) == "replayed request"
    later = NOW + 301
    guard.authenticate(sign(request_id="c", timestamp=str(later)), HEALTH, now=later)


@settings(max_examples=100)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 400), st.binary(min_size=1, max_size=2)),
        max_size=60,
    )
)
def test_replay_cache_memory_stays_bounded(events):
    cache = ReplayCache(max_entries=8)
    now = NOW
    for step, ts_back, mac in events:
        now += step
        with contextlib.suppress(Unauthenticated, ResourceExhausted):
            cache.check_and_record("default", mac, timestamp_s=now - ts_back, now=now)
        assert len(cache) <= 8
        assert len(cache._expiry_heap) <= 8 + len(events)


def test_replay_cache_rejects_bad_parameters():
    with pytest.raises(ValueError, match="max_entries"):
        ReplayCache(max_entries=0)
    with pytest.raises(ValueError, match="window_s"):
        ReplayCache(window_s=-1)


def test_replay_cache_purge_by_now():
    cache = ReplayCache()
    cache.check_and_record("k", b"m", timestamp_s=NOW, now=NOW)
    cache.purge(now=NOW + 300)
    assert len(cache) == 1
    cache.purge(now=NOW + 301)
    assert len(cache) == 0


# --- keyring parsing (spec 60 §3.4.6) -------------------------------------------------------------


def test_keyring_parses_trims_and_skips_empty_entries():
    ring = parse_hmac_keyring(" default : 6869 ,, kid-2026-01:0A0b ,")
    assert ring.keys == {"default": b"hi", "kid-2026-01": b"\x0a\x0b"}
    assert ring.key_ids == ("default", "kid-2026-01")


def test_keyring_splits_at_the_first_colon():
    with pytest.raises(ConfigError, match="secrets must be valid hex"):
        parse_hmac_keyring("a:01:02")


@pytest.mark.parametrize(
    ("raw", "fragment", "entry"),
    [
        ("nocolon", "entries must use kid:hexsecret format", 1),
        ("default:01,  :01", "key-id must not be empty", 2),
        ("default:zz", "secrets must be valid hex", 1),
        ("default:0", "secrets must be valid hex", 1),
        ("default:01 02", "secrets must be valid hex", 1),
        ("default:", "secret must not be empty", 1),
        ("a:01,a:02", "contains duplicate key-id", 2),
        ("a:01, a :02", "contains duplicate key-id", 2),
        (",,", "must define at least one key", None),
        ("", "must define at least one key", None),
    ],
)
def test_keyring_parse_errors_are_precise(raw, fragment, entry):
    with pytest.raises(ConfigError) as info:
        parse_hmac_keyring(raw)
    text = str(info.value)
    assert text.startswith("EVIDENCEOS_HMAC_KEYS ")
    assert fragment in text
    if entry is not None:
        assert text.endswith(f"(entry {entry})")


def test_keyring_error_order():
    # the first bad entry wins
    with pytest.raises(ConfigError, match=r"valid hex \(entry 1\)"):
        parse_hmac_keyring("a:zz,nocolon")
    # within an entry: key id, then hex, then emptiness, then duplicates
    with pytest.raises(ConfigError, match="key-id must not be empty"):
        parse_hmac_keyring(" :zz")
    with pytest.raises(ConfigError, match="secrets must be valid hex"):
        parse_hmac_keyring("a:01,a:zz")
    with pytest.raises(ConfigError, match="secret must not be empty"):
        parse_hmac_keyring("a:01,a:")


secret_text = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters=",:"), min_size=6, max_size=40
).filter(lambda s: s.strip() == s and len(set(s)) > 3)


@given(secret=secret_text)
def test_keyring_errors_never_echo_the_secret(secret):
    for raw in (secret, f"kid:{secret}g", f"kid:{secret}", f"kid:{secret.encode().hex()}x"):
        text = error_text(functools.partial(parse_hmac_keyring, raw)) or ""
        assert secret not in text
        assert secret.encode().hex() not in text


def test_keyring_repr_hides_secrets():
    ring = parse_hmac_keyring("default:736563726574")
    assert "secret" not in repr(ring)
    assert "736563726574" not in repr(ring)
    assert "secret" not in repr(HmacAuth(ring))


def test_keyring_value_checks():
    with pytest.raises(ConfigError):
        HmacKeyring({})
    with pytest.raises(ConfigError):
        HmacKeyring({"": b"x"})
    with pytest.raises(ConfigError):
        HmacKeyring({"k": b""})


def test_keyring_reports_ids_no_header_can_carry():
    ring = HmacKeyring({"default": b"x", "has space": b"y", "k" * 129: b"z"})
    assert ring.unreachable_key_ids() == ("has space", "k" * 129)


# --- auth mode selection (spec 60 §3.1, §1.5.2) ---------------------------------------------------


def build(env: Mapping[str, str] | None = None, **flags: Any) -> AuthConfig:
    args: dict[str, Any] = {
        "auth_token": None,
        "auth_hmac_key": None,
        "agent_tokens": (),
        "auditor_tokens": (),
    }
    args.update(flags)
    return build_auth_config(env=env or {}, production_mode=False, **args)


HMAC_ENV = {"EVIDENCEOS_HMAC_KEYS": "default:01"}
SHARED_ENV = {"EVIDENCEOS_HMAC_SHARED_SECRET": "s"}


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({}, {"auth_token": "t", "auth_hmac_key": "h"}, "--auth-token and --auth-hmac-key"),
        (
            HMAC_ENV,
            {"auth_token": "t"},
            "--auth-token is mutually exclusive with EVIDENCEOS_HMAC_KEYS/"
            "EVIDENCEOS_HMAC_SHARED_SECRET",
        ),
        (SHARED_ENV, {"auth_token": "t"}, "--auth-token is mutually exclusive with EVIDENCEOS_"),
        (
            {},
            {"auth_token": "t", "agent_tokens": ("a",)},
            "--auth-token is mutually exclusive with --agent-tokens/--auditor-tokens",
        ),
        (
            {},
            {"agent_tokens": ("a",), "auth_hmac_key": "h"},
            "--agent-tokens and --auth-hmac-key are mutually exclusive",
        ),
        (
            HMAC_ENV,
            {"agent_tokens": ("a",)},
            "--agent-tokens and EVIDENCEOS_HMAC_KEYS/EVIDENCEOS_HMAC_SHARED_SECRET are mutually",
        ),
        (
            {},
            {"auditor_tokens": ("a",), "auth_hmac_key": "h"},
            "--auditor-tokens and --auth-hmac-key are mutually exclusive",
        ),
        (
            SHARED_ENV,
            {"auditor_tokens": ("a",)},
            "--auditor-tokens and EVIDENCEOS_HMAC_KEYS/EVIDENCEOS_HMAC_SHARED_SECRET are",
        ),
        ({}, {"agent_tokens": ("a,,b",)}, "role token lists must not contain empty entries"),
        ({}, {"auditor_tokens": (" ",)}, "role token lists must not contain empty entries"),
        (
            HMAC_ENV,
            {"auth_hmac_key": "h"},
            "--auth-hmac-key and EVIDENCEOS_HMAC_KEYS are mutually exclusive",
        ),
        (
            {**HMAC_ENV, **SHARED_ENV},
            {},
            "EVIDENCEOS_HMAC_SHARED_SECRET cannot override default key in EVIDENCEOS_HMAC_KEYS",
        ),
        ({"EVIDENCEOS_HMAC_SHARED_SECRET": ""}, {}, "EVIDENCEOS_HMAC_SHARED_SECRET must not be"),
        ({"EVIDENCEOS_HMAC_KEYS": "default:zz"}, {}, "secrets must be valid hex"),
        ({"EVIDENCEOS_HMAC_KEYS": ",,"}, {}, "at least one key"),
        ({}, {"auth_token": ""}, "--auth-token must not be empty"),
        ({}, {"auth_hmac_key": ""}, "--auth-hmac-key must not be empty"),
    ],
)
def test_contradictory_auth_configuration_is_refused(env, flags, message):
    with pytest.raises(ConfigError) as info:
        build(env, **flags)
    assert message in str(info.value)


def test_mode_selection():
    assert build() == NoAuth()
    assert build(auth_token="t") == SingleTokenAuth("t")  # noqa: S106
    roles = build(agent_tokens=(" a ,b", "c"), auditor_tokens=("z",))
    assert roles == RoleTokenAuth(agent_tokens=("a", "b", "c"), auditor_tokens=("z",))
    flag_key = build(auth_hmac_key="hk")
    assert isinstance(flag_key, HmacAuth)
    assert flag_key.keyring.keys == {"default": b"hk"}
    env_keys = build({"EVIDENCEOS_HMAC_KEYS": "kid:01", "EVIDENCEOS_HMAC_SHARED_SECRET": "s"})
    assert isinstance(env_keys, HmacAuth)
    assert env_keys.keyring.keys == {"kid": b"\x01", "default": b"s"}
    shared = build(SHARED_ENV)
    assert isinstance(shared, HmacAuth)
    assert shared.keyring.keys == {"default": b"s"}


def test_flag_hmac_key_silently_wins_over_shared_secret_env():
    config = build(SHARED_ENV, auth_hmac_key="flag")
    assert isinstance(config, HmacAuth)
    assert config.keyring.keys == {"default": b"flag"}


def test_production_mode_makes_the_timestamp_mandatory():
    config = build_auth_config(auth_token=None, auth_hmac_key="h", env={}, production_mode=True)
    assert isinstance(config, HmacAuth)
    assert config.require_timestamp


def test_auth_config_reprs_hide_tokens():
    assert "tok-xyz" not in repr(SingleTokenAuth("tok-xyz"))
    assert "tok-xyz" not in repr(RoleTokenAuth(("tok-xyz",), ()))


def test_parse_role_tokens():
    assert parse_role_tokens(["a, b", "c"]) == ("a", "b", "c")
    assert parse_role_tokens([]) == ()
    with pytest.raises(ConfigError, match="empty entries"):
        parse_role_tokens(["a,"])


# --- bearer tokens (spec 60 §3.2, §3.3) -----------------------------------------------------------


def bearer(value: str) -> dict[str, str]:
    return {"authorization": value}


def test_single_token():
    guard = RequestGuard(SingleTokenAuth("top-secret"))
    assert refused(guard, {}) == "missing authorization"
    assert refused(guard, bearer("Bearer wrong")) == "invalid bearer token"
    assert refused(guard, bearer("bearer top-secret")) == "invalid bearer token"
    assert refused(guard, bearer("Bearer top-secret ")) == "invalid bearer token"
    assert refused(guard, bearer("Bearer  top-secret")) == "invalid bearer token"
    assert refused(guard, bearer("Bearer top-secre")) == "invalid bearer token"
    assert refused(guard, bearer("Basic top-secret")) == "invalid bearer token"
    assert refused(guard, bearer("Bearer top-sécret")) == "invalid authorization header"
    caller = guard.authenticate(bearer("Bearer top-secret"), HEALTH, now=NOW)
    assert caller == CallerIdentity(PrincipalId(TOP_SECRET_PRINCIPAL), Role.AUDITOR)


def test_role_tokens():
    guard = RequestGuard(RoleTokenAuth(("agent-secret", "both"), ("auditor-secret", "both")))
    assert guard.authenticate(bearer("Bearer agent-secret"), HEALTH, now=NOW).role is Role.AGENT
    auditor = guard.authenticate(bearer("Bearer auditor-secret"), HEALTH, now=NOW)
    assert auditor.role is Role.AUDITOR
    assert guard.authenticate(bearer("Bearer both"), HEALTH, now=NOW).role is Role.AUDITOR
    assert refused(guard, bearer("Bearer unknown")) == "invalid bearer token"
    assert refused(guard, bearer("Bearer agent-secret2")) == "invalid bearer token"
    assert refused(guard, {}) == "missing authorization"


@pytest.mark.parametrize("presented", ["agent-1", "agent-3", "auditor-2", "nobody", ""])
def test_every_configured_token_is_compared_without_early_exit(monkeypatch, presented):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # the module auth calls through
    guard = RequestGuard(
        RoleTokenAuth(("agent-1", "agent-2", "agent-3"), ("auditor-1", "auditor-2"))
    )
    with contextlib.suppress(Unauthenticated):
        guard.authenticate(bearer(f"Bearer {presented}"), HEALTH, now=NOW)
    assert len(compared) == 5
    # fixed-length digests are compared, so token lengths do not leak through timing either
    assert {len(a) for a, _ in compared} == {len(b) for _, b in compared} == {32}


@given(token=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_bearer_errors_never_echo_the_token(token):
    guard = RequestGuard(SingleTokenAuth("configured-token"))
    text = error_text(lambda: guard.authenticate(bearer(f"Bearer {token}"), HEALTH, now=NOW))
    assert text in (None, "invalid bearer token")


# --- identity (spec 60 §4.1 amended by DESIGN §6) -------------------------------------------------


def test_worked_principal_values():
    assert hash_principal_id("bearer", "top-secret") == TOP_SECRET_PRINCIPAL
    assert hash_principal_id("bearer", "owner-token") == OWNER_PRINCIPAL
    assert hash_principal_id("mtls", "abc123") == FP_ABC123_PRINCIPAL


def test_no_auth_is_anonymous_agent():
    caller = RequestGuard(NoAuth()).authenticate({}, HEALTH, now=NOW)
    assert caller == CallerIdentity(ANONYMOUS, Role.AGENT)


def test_no_auth_bearer_names_a_principal_but_grants_no_role():
    headers = {
        "authorization": "Bearer owner-token",
        "x-evidenceos-token-scopes": "operator auditor",
        "x-evidenceos-auth-role": "operator",
    }
    caller = RequestGuard(NoAuth()).authenticate(headers, HEALTH, now=NOW)
    assert caller == CallerIdentity(PrincipalId(OWNER_PRINCIPAL), Role.AGENT)


def test_client_sent_certificate_headers_grant_nothing():
    headers = {"x-client-cert-fp": "abc123", "x-client-cert-san": "operator"}
    policy = IdentityPolicy(operator_cert_fingerprints=frozenset({"abc123"}))
    caller = RequestGuard(NoAuth(), policy).authenticate(headers, HEALTH, now=NOW)
    assert caller == CallerIdentity(ANONYMOUS, Role.AGENT)


def test_guard_role_header_is_ignored_under_the_guard():
    guard = RequestGuard(RoleTokenAuth(("agent-secret",), ()))
    headers = {
        "authorization": "Bearer agent-secret",
        "x-evidenceos-auth-role": "operator",
        "x-evidenceos-token-scopes": "operator",
    }
    assert guard.authenticate(headers, HEALTH, now=NOW).role is Role.AGENT


def test_hmac_headers_without_hmac_mode_give_no_identity():
    caller = RequestGuard(NoAuth()).authenticate(GOOD, HEALTH, now=NOW)
    assert caller.principal_id == ANONYMOUS


def test_hmac_mode_ignores_a_bearer_header():
    headers = {**GOOD, "authorization": "Bearer owner-token"}
    caller = hmac_guard().authenticate(headers, HEALTH, now=NOW)
    assert caller.principal_id == hash_principal_id("hmac", "default")


@pytest.mark.parametrize(
    ("san", "listed", "role"),
    [
        ("", False, Role.AGENT),
        ("client.example", False, Role.AGENT),
        ("operator", False, Role.OPERATOR),
        ("OPERATOR", False, Role.OPERATOR),
        ("spiffe://x/role=Operator", False, Role.OPERATOR),
        ("spiffe://x/role=auditor", False, Role.AUDITOR),
        ("client.example", True, Role.OPERATOR),
    ],
)
def test_certificate_roles(san, listed, role):
    policy = IdentityPolicy(operator_cert_fingerprints=frozenset({FP} if listed else set()))
    peer = PeerCertificate(FP, san)
    caller = RequestGuard(NoAuth(), policy).authenticate({}, HEALTH, now=NOW, peer=peer)
    assert caller.role is role
    assert caller.principal_id == hash_principal_id("mtls", san or FP)


def test_certificate_principal_wins_and_strongest_verified_role_applies():
    guard = RequestGuard(RoleTokenAuth((), ("auditor-secret",)))
    peer = PeerCertificate(FP, "client.example")
    caller = guard.authenticate(bearer("Bearer auditor-secret"), HEALTH, now=NOW, peer=peer)
    assert caller == CallerIdentity(hash_principal_id("mtls", "client.example"), Role.AUDITOR)
    # the guard still requires its own credential on an mTLS connection
    assert refused(guard, {}) == "missing authorization"


def test_operator_principals_grant_the_operator_role():
    policy = IdentityPolicy(operator_principals=frozenset({PrincipalId(OWNER_PRINCIPAL)}))
    guard = RequestGuard(NoAuth(), policy)
    assert guard.authenticate(bearer("Bearer owner-token"), HEALTH, now=NOW).is_operator
    assert not guard.authenticate({}, HEALTH, now=NOW).is_operator  # anonymous not by default
    anon_policy = IdentityPolicy(operator_principals=frozenset({ANONYMOUS}))
    assert RequestGuard(NoAuth(), anon_policy).authenticate({}, HEALTH, now=NOW).is_operator


def test_derive_caller_identity_directly():
    guard = GuardResult(Role.AUDITOR, PrincipalId("bearer:x"))
    assert derive_caller_identity(guard, None, IdentityPolicy()) == CallerIdentity(
        PrincipalId("bearer:x"), Role.AUDITOR
    )
    assert derive_caller_identity(GuardResult(Role.AGENT, None), None, IdentityPolicy()) == (
        CallerIdentity(ANONYMOUS, Role.AGENT)
    )


def _self_signed(san: str | None) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san), x509.DNSName("second")]),
            critical=False,
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(
        serialization.Encoding.DER
    )


def test_peer_certificate_from_pem_uses_der_fingerprint_and_first_san():
    pem, der = _self_signed("client.example")
    peer = PeerCertificate.from_pem(pem)
    assert peer == PeerCertificate(hashlib.sha256(der).hexdigest(), "client.example")
    assert PeerCertificate.from_pem(pem, sans=["  operator "]).san == "operator"
    pem_no_san, der_no_san = _self_signed(None)
    assert PeerCertificate.from_pem(pem_no_san).san == ""
    assert (
        PeerCertificate.from_der(der_no_san).fingerprint == hashlib.sha256(der_no_san).hexdigest()
    )


def test_peer_certificate_rejects_bad_input():
    with pytest.raises(Unauthenticated, match="invalid peer certificate"):
        PeerCertificate("abc123")
    with pytest.raises(Unauthenticated, match="invalid peer certificate"):
        PeerCertificate(FP.upper())
    with pytest.raises(Unauthenticated, match="invalid peer certificate"):
        PeerCertificate.from_pem(b"not a certificate")


def test_headers_from_metadata_first_value_wins_and_binary_dropped():
    metadata: list[tuple[str, str | bytes]] = [
        ("X-Request-Id", "first"),
        ("x-request-id", "second"),
        ("trace-bin", b"\x00"),
        ("authorization", "Bearer t"),
    ]
    assert headers_from_metadata(metadata) == {
        "x-request-id": "first",
        "authorization": "Bearer t",
    }


def test_parse_operator_principals():
    assert parse_operator_principals(None) == frozenset()
    assert parse_operator_principals(" , ,") == frozenset()
    assert parse_operator_principals(" bearer:a ,anonymous,,") == {"bearer:a", "anonymous"}


def test_parse_operator_cert_fingerprints():
    colon_upper = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
    assert parse_operator_cert_fingerprints(None) == frozenset()
    assert parse_operator_cert_fingerprints(f" {colon_upper} ,,") == {FP}
    with pytest.raises(ConfigError, match="entry 2 is not a SHA-256 fingerprint"):
        parse_operator_cert_fingerprints(f"{FP},abc123")


def test_identity_policy_from_env():
    policy = IdentityPolicy.from_env(
        {"EVIDENCEOS_OPERATOR_PRINCIPALS": "bearer:x", "EVIDENCEOS_OPERATOR_CERT_FINGERPRINTS": FP}
    )
    assert policy == IdentityPolicy(frozenset({PrincipalId("bearer:x")}), frozenset({FP}))
    assert IdentityPolicy.from_env({}) == IdentityPolicy()


# --- authorization (spec 60 §4.3) -----------------------------------------------------------------


def test_authorization_checks():
    owner = PrincipalId("bearer:owner")
    agent = CallerIdentity(owner, Role.AGENT)
    auditor = CallerIdentity(PrincipalId("bearer:aud"), Role.AUDITOR)
    operator = CallerIdentity(PrincipalId("mtls:op"), Role.OPERATOR)

    with pytest.raises(PermissionDenied, match=r"^auditor role required$"):
        verify_auditor_role(agent)
    verify_auditor_role(auditor)
    verify_auditor_role(operator)

    with pytest.raises(PermissionDenied, match=r"^operator role required$"):
        verify_operator_role(auditor)
    verify_operator_role(operator)

    verify_claim_access(agent, owner)
    verify_claim_access(operator, owner)
    with pytest.raises(PermissionDenied) as info:
        verify_claim_access(auditor, owner)
    assert str(info.value) == "AUTHZ_CLAIM_OWNER_MISMATCH: caller does not own claim"


def test_role_rank_order():
    assert Role.AGENT.rank < Role.AUDITOR.rank < Role.OPERATOR.rank
