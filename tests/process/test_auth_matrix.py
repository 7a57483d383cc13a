"""The authentication and authorization matrix over every RPC of both services
(spec 60 §3, §4.3, §8 scenarios 1 to 13 and 22 to 27; DESIGN §6, §9).

Three real daemons, each logging at debug level:

* **tokens** — role-token bearer mode: two agents, an auditor, and an operator (an auditor token
  whose principal is listed in ``EVIDENCEOS_OPERATOR_PRINCIPALS``);
* **hmac** — request signing with a two-key ``EVIDENCEOS_HMAC_KEYS`` keyring;
* **open** — no credential configured (every caller is ``anonymous``, an auditor, and not an
  operator unless listed).

Every refusal expected by the matrix is checked for its exact status and message, counted and
printed. The matrix runs once per module; afterwards no log line of any daemon — nor the stderr
of a daemon refusing a bad configuration — may contain a token, a key or a signature.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb2
from evidenceos._proto.v2 import evidenceos_pb2 as v2_pb2
from tests.support.claims import create_request, write_epoch_config
from tests.support.daemon import DaemonProcess, run_to_exit

pytestmark = pytest.mark.process

T = 10.0
STREAM_T = 0.5  # a watch that passed the guard keeps streaming; its deadline ends it
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
OWNER_MISMATCH = "AUTHZ_CLAIM_OWNER_MISMATCH: caller does not own claim"

AUDITOR_RPCS = {"GetInclusionProof", "GetConsistencyProof", "FetchCapsule", "GetCapsule"}
AUDITOR_RPCS_V2 = AUDITOR_RPCS | {"GetHoldoutPoolBudgets"}
OPERATOR_RPCS = {"GrantCredit", "SetCreditLimit", "SetHoldoutPoolBudgets"}
#: RPCs whose handler checks claim ownership right after the lookup.
OWNED_RPCS = (
    "CommitArtifacts",
    "FreezeGates",
    "Freeze",
    "SealClaim",
    "Seal",
    "ExecuteClaimV2",
    "RevokeClaim",
)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- every RPC of both services ------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    pb: ModuleType
    name: str
    path: str
    streaming: bool

    @property
    def package(self) -> str:
        return str(self.pb.DESCRIPTOR.package)

    @property
    def label(self) -> str:
        return f"{self.package.rsplit('.', 1)[-1]}.{self.name}"

    def request(self, **fields: Any) -> Any:
        method = self.pb.DESCRIPTOR.services_by_name["EvidenceOS"].methods_by_name[self.name]
        return getattr(self.pb, method.input_type.name)(**fields)

    def response_class(self) -> Any:
        method = self.pb.DESCRIPTOR.services_by_name["EvidenceOS"].methods_by_name[self.name]
        return getattr(self.pb, method.output_type.name)


def all_rpcs() -> list[Rpc]:
    rpcs = []
    for pb in (v2_pb2, v1_pb2):
        service = pb.DESCRIPTOR.services_by_name["EvidenceOS"]
        for method in service.methods:
            rpcs.append(
                Rpc(pb, method.name, f"/{service.full_name}/{method.name}", method.server_streaming)
            )
    return rpcs


RPCS = all_rpcs()


def invoke(
    channel: grpc.Channel, rpc: Rpc, metadata: Sequence[tuple[str, str]], request: Any = None
) -> tuple[grpc.StatusCode, str]:
    """Call one RPC with raw metadata; (code, details), OK when it succeeded."""
    message = rpc.request() if request is None else request
    kwargs: dict[str, Any] = {
        "request_serializer": type(message).SerializeToString,
        "response_deserializer": rpc.response_class().FromString,
    }
    try:
        if rpc.streaming:
            for _ in channel.unary_stream(rpc.path, **kwargs)(
                message, metadata=tuple(metadata), timeout=STREAM_T
            ):
                pass
        else:
            channel.unary_unary(rpc.path, **kwargs)(message, metadata=tuple(metadata), timeout=T)
    except grpc.RpcError as exc:
        failed: Any = exc
        return failed.code(), str(failed.details())
    return grpc.StatusCode.OK, ""


# -- credentials ---------------------------------------------------------------------------------


@dataclass
class Secrets:
    agent_a: str = field(default_factory=lambda: "agentA-" + secrets.token_hex(16))
    agent_b: str = field(default_factory=lambda: "agentB-" + secrets.token_hex(16))
    auditor: str = field(default_factory=lambda: "auditor-" + secrets.token_hex(16))
    operator: str = field(default_factory=lambda: "operator-" + secrets.token_hex(16))
    wrong: str = field(default_factory=lambda: "wrong-" + secrets.token_hex(16))
    hmac_k1: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    hmac_default: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    hmac_wrong: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    signatures: list[str] = field(default_factory=list)

    def bearer(self, token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    def needles(self) -> list[str]:
        """Every credential string that must never reach a log."""
        out = [self.agent_a, self.agent_b, self.auditor, self.operator, self.wrong]
        for key in (self.hmac_k1, self.hmac_default, self.hmac_wrong):
            out += [key.hex(), key.hex().upper()]
        for header in self.signatures:
            out += [header, header.removeprefix("sha256=")]
        return out


_RIDS = itertools.count()


def signed(
    keys: Secrets,
    path: str,
    *,
    secret: bytes | None = None,
    key_id: str = "k1",
    timestamp: int | None = None,
    request_id: str | None = None,
) -> list[tuple[str, str]]:
    """HMAC headers over ``<request_id>:<path>:<timestamp>`` (spec 60 §3.4.2)."""
    rid = request_id or f"matrix-{next(_RIDS)}"
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(
        keys.hmac_k1 if secret is None else secret, f"{rid}:{path}:{ts}".encode(), hashlib.sha256
    ).hexdigest()
    header = "sha256=" + mac
    keys.signatures.append(header)
    return [
        ("x-request-id", rid),
        ("x-evidenceos-timestamp", ts),
        ("x-evidenceos-key-id", key_id),
        ("x-evidenceos-signature", header),
    ]


def with_request_id(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*metadata, ("x-request-id", f"rid-{next(_RIDS)}")]


# -- the matrix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    mode: str
    scenario: str
    rpc: str
    expected: tuple[grpc.StatusCode, str | None]  # None: any message
    got: tuple[grpc.StatusCode, str]

    @property
    def ok(self) -> bool:
        code, message = self.expected
        return self.got[0] == code and (message is None or self.got[1] == message)


@dataclass
class Matrix:
    keys: Secrets
    daemons: dict[str, DaemonProcess]
    checks: list[Check] = field(default_factory=list)
    refused_startups: list[str] = field(default_factory=list)

    def expect(
        self,
        mode: str,
        scenario: str,
        rpc: Rpc,
        got: tuple[grpc.StatusCode, str],
        code: grpc.StatusCode,
        message: str | None,
    ) -> None:
        self.checks.append(Check(mode, scenario, rpc.label, (code, message), got))


def start(
    tmp: Path, name: str, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> DaemonProcess:
    data_dir = tmp / name
    data_dir.mkdir()
    write_epoch_config(data_dir)
    daemon = DaemonProcess(
        data_dir,
        extra_args=["--insecure-synthetic-holdout", "--log", "debug", *extra_args],
        env=env,
    )
    return daemon.start()


def create_claim(channel: grpc.Channel, metadata: Sequence[tuple[str, str]], name: str) -> bytes:
    rpc = next(r for r in RPCS if r.pb is v2_pb2 and r.name == "CreateClaimV2")
    request = create_request(name, holdout_ref="synthetic-matrix")
    response_cls = rpc.response_class()
    call = channel.unary_unary(
        rpc.path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return bytes(call(request, metadata=tuple(with_request_id(metadata)), timeout=T).claim_id)


def owned_request(rpc: Rpc, claim_id: bytes) -> Any:
    if rpc.name == "CommitArtifacts":
        artifact = rpc.pb.Artifact(artifact_hash=bytes(32), kind="wasm")
        return rpc.request(claim_id=claim_id, artifacts=[artifact], wasm_module=b"\0asm")
    if rpc.name == "RevokeClaim":
        return rpc.request(claim_id=claim_id, reason="not mine")
    return rpc.request(claim_id=claim_id)


def run_token_matrix(matrix: Matrix, tmp: Path) -> None:
    keys = matrix.keys
    operator_principal = "bearer:" + sha256_hex(keys.operator)
    daemon = start(
        tmp,
        "tokens",
        [
            "--agent-tokens",
            f"{keys.agent_a},{keys.agent_b}",
            "--auditor-tokens",
            keys.auditor,
            "--auditor-tokens",
            keys.operator,
        ],
        {"EVIDENCEOS_OPERATOR_PRINCIPALS": operator_principal},
    )
    matrix.daemons["tokens"] = daemon
    channel = daemon.channel()
    mode = "tokens"
    for rpc in RPCS:
        for scenario, metadata, message in (
            ("no credential", [], "missing authorization"),
            ("wrong token", keys.bearer(keys.wrong), "invalid bearer token"),
            ("not a bearer header", [("authorization", f"Basic {keys.wrong}")], None),
            ("lower-case scheme", [("authorization", f"bearer {keys.agent_a}")], None),
        ):
            got = invoke(channel, rpc, with_request_id(metadata))
            matrix.expect(mode, scenario, rpc, got, UNAUTH, message or "invalid bearer token")
        if rpc.name in OPERATOR_RPCS:
            for scenario, token in (("agent on operator RPC", keys.agent_a),
                                    ("auditor on operator RPC", keys.auditor)):  # fmt: skip
                got = invoke(channel, rpc, with_request_id(keys.bearer(token)))
                matrix.expect(mode, scenario, rpc, got, DENIED, "operator role required")
            got = invoke(channel, rpc, with_request_id(keys.bearer(keys.operator)))
            assert got[0] != DENIED, (rpc.label, got)
        elif rpc.name in AUDITOR_RPCS_V2:
            got = invoke(channel, rpc, with_request_id(keys.bearer(keys.agent_a)))
            matrix.expect(mode, "agent on auditor RPC", rpc, got, DENIED, "auditor role required")

    # Another principal's claim: agent B (and the auditor) act on agent A's claim.
    claim_a = create_claim(channel, keys.bearer(keys.agent_a), "owned-by-a")
    for rpc in RPCS:
        if rpc.name in OWNED_RPCS:
            got = invoke(
                channel,
                rpc,
                with_request_id(keys.bearer(keys.agent_b)),
                owned_request(rpc, claim_a),
            )
            matrix.expect(mode, "another principal's claim", rpc, got, DENIED, OWNER_MISMATCH)
        if rpc.name in ("GetCapsule", "FetchCapsule"):
            got = invoke(
                channel,
                rpc,
                with_request_id(keys.bearer(keys.auditor)),
                owned_request(rpc, claim_a),
            )
            matrix.expect(mode, "auditor on another's capsule", rpc, got, DENIED, OWNER_MISMATCH)
    # The owner passes the ownership check (the claim is merely in the wrong state).
    freeze = next(r for r in RPCS if r.pb is v2_pb2 and r.name == "FreezeGates")
    got = invoke(channel, freeze, keys.bearer(keys.agent_a), freeze.request(claim_id=claim_a))
    assert got[0] == grpc.StatusCode.FAILED_PRECONDITION, got


def run_hmac_matrix(matrix: Matrix, tmp: Path) -> None:
    keys = matrix.keys
    keyring = f"k1:{keys.hmac_k1.hex()}, default:{keys.hmac_default.hex()}"
    daemon = start(tmp, "hmac", env={"EVIDENCEOS_HMAC_KEYS": keyring})
    matrix.daemons["hmac"] = daemon
    channel = daemon.channel()
    mode = "hmac"
    for rpc in RPCS:
        now = int(time.time())
        other = "/evidenceos.v2.EvidenceOS/" + (
            "GetServerInfo" if rpc.name == "Health" else "Health"
        )
        scenarios: list[tuple[str, list[tuple[str, str]], str]] = [
            ("no credential", [], "missing x-request-id"),
            ("no signature", [("x-request-id", f"bare-{next(_RIDS)}")],
             "missing x-evidenceos-signature"),
            ("bad HMAC", signed(keys, rpc.path, secret=keys.hmac_wrong), "invalid signature"),
            ("wrong path", signed(keys, other), "invalid signature"),
            ("stale timestamp", signed(keys, rpc.path, timestamp=now - 301),
             "timestamp skew too large"),
            ("future timestamp", signed(keys, rpc.path, timestamp=now + 600),
             "timestamp skew too large"),
            ("unknown key id", signed(keys, rpc.path, key_id="kid-does-not-exist"),
             "unknown x-evidenceos-key-id"),
            ("key id of another key", signed(keys, rpc.path, key_id="default"),
             "invalid signature"),
        ]  # fmt: skip
        for scenario, metadata, message in scenarios:
            matrix.expect(mode, scenario, rpc, invoke(channel, rpc, metadata), UNAUTH, message)
        valid = signed(keys, rpc.path)
        first = invoke(channel, rpc, valid)
        assert first[0] != UNAUTH, (rpc.label, first)
        matrix.expect(mode, "replay", rpc, invoke(channel, rpc, valid), UNAUTH, "replayed request")
        if rpc.name in OPERATOR_RPCS:
            got = invoke(channel, rpc, signed(keys, rpc.path))
            matrix.expect(mode, "agent on operator RPC", rpc, got, DENIED, "operator role required")
        elif rpc.name in AUDITOR_RPCS_V2:
            got = invoke(channel, rpc, signed(keys, rpc.path))
            matrix.expect(mode, "agent on auditor RPC", rpc, got, DENIED, "auditor role required")
    # The rotating key works with its own id (scenario 11); the other key's principal is distinct.
    health = next(r for r in RPCS if r.pb is v2_pb2 and r.name == "Health")
    got = invoke(
        channel, health, signed(keys, health.path, secret=keys.hmac_default, key_id="default")
    )
    assert got == (grpc.StatusCode.OK, "")

    # Another principal's claim: key k1 owns it, key ``default`` is someone else.
    create = next(r for r in RPCS if r.pb is v2_pb2 and r.name == "CreateClaimV2")
    request = create_request("owned-by-k1", holdout_ref="synthetic-matrix")
    rid = f"create-{next(_RIDS)}"
    claim = channel.unary_unary(
        create.path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=create.response_class().FromString,
    )(request, metadata=tuple(signed(keys, create.path, request_id=rid)), timeout=T)
    for rpc in RPCS:
        if rpc.name in OWNED_RPCS:
            metadata = signed(keys, rpc.path, secret=keys.hmac_default, key_id="default")
            got = invoke(channel, rpc, metadata, owned_request(rpc, bytes(claim.claim_id)))
            matrix.expect(mode, "another principal's claim", rpc, got, DENIED, OWNER_MISMATCH)


def run_open_matrix(matrix: Matrix, tmp: Path) -> None:
    daemon = start(tmp, "open")
    matrix.daemons["open"] = daemon
    channel = daemon.channel()
    for rpc in RPCS:
        if rpc.name in OPERATOR_RPCS:
            got = invoke(channel, rpc, with_request_id([]))
            matrix.expect("open", "anonymous on operator RPC", rpc, got, DENIED,
                          "operator role required")  # fmt: skip
        elif rpc.name in AUDITOR_RPCS:
            # D-R1: with nothing configured the caller is an auditor (argument errors follow).
            got = invoke(channel, rpc, with_request_id([]))
            assert got[0] not in (UNAUTH, DENIED), (rpc.label, got)


def run_refused_startups(matrix: Matrix, tmp: Path) -> None:
    """Bad auth configurations refuse to start before any side effect, naming no secret."""
    keys = matrix.keys
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--auth-token", keys.wrong, "--auth-hmac-key", keys.hmac_wrong.hex()], {},
         "--auth-token and --auth-hmac-key are mutually exclusive"),
        (["--auth-token", keys.wrong], {"EVIDENCEOS_HMAC_KEYS": f"k:{keys.hmac_k1.hex()}"},
         "--auth-token is mutually exclusive with"),
        (["--agent-tokens", f"{keys.agent_a},,{keys.agent_b}"], {},
         "role token lists must not contain empty entries"),
        ([], {"EVIDENCEOS_HMAC_KEYS": f"a:{keys.hmac_k1.hex()},a:{keys.hmac_default.hex()}"},
         "duplicate key-id"),
        ([], {"EVIDENCEOS_HMAC_KEYS": f"default:{keys.hmac_k1.hex()}zz"},
         "secrets must be valid hex"),
    ]  # fmt: skip
    for number, (args, env, fragment) in enumerate(cases):
        data_dir = tmp / f"refused-{number}"
        exited = run_to_exit(data_dir, extra_args=args, env=env)
        assert exited.returncode != 0
        assert fragment in exited.stderr, exited.stderr
        assert not data_dir.exists(), "refused before any side effect"
        matrix.refused_startups.append(exited.stderr)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("auth-matrix")
    result = Matrix(Secrets(), {})
    try:
        run_token_matrix(result, tmp)
        run_hmac_matrix(result, tmp)
        run_open_matrix(result, tmp)
        run_refused_startups(result, tmp)
        yield result
    finally:
        for daemon in result.daemons.values():
            daemon.kill()


# -- the tests -----------------------------------------------------------------------------------


def test_every_refusal_has_its_status_and_message(matrix: Matrix) -> None:
    per_scenario = collections.Counter(f"{c.mode}: {c.scenario}" for c in matrix.checks)
    lines = [f"auth matrix: {len(matrix.checks)} refusals over {len(RPCS)} RPCs (v1 + v2)"]
    lines += [f"  {count:4d}  {name}" for name, count in sorted(per_scenario.items())]
    lines.append(f"  {len(matrix.refused_startups):4d}  refused start-ups")
    print("\n".join(lines))  # noqa: T201 - the brief asks for the count to be printed
    failures = [c for c in matrix.checks if not c.ok]
    assert not failures, "\n".join(
        f"{c.mode}/{c.scenario}/{c.rpc}: expected {c.expected}, got {c.got}" for c in failures[:20]
    )


def test_the_guard_covers_every_rpc_of_both_services(matrix: Matrix) -> None:
    labels = {rpc.label for rpc in RPCS}
    assert len(labels) == len(RPCS) >= 40
    for mode, scenario in (
        ("tokens", "no credential"),
        ("tokens", "wrong token"),
        ("hmac", "no credential"),
        ("hmac", "bad HMAC"),
        ("hmac", "wrong path"),
        ("hmac", "stale timestamp"),
        ("hmac", "replay"),
    ):
        covered = {c.rpc for c in matrix.checks if (c.mode, c.scenario) == (mode, scenario)}
        assert covered == labels, (mode, scenario, labels - covered)
    operator = {c.rpc for c in matrix.checks if c.scenario.endswith("on operator RPC")}
    assert operator == {
        "v2.GrantCredit",
        "v2.SetCreditLimit",
        "v2.SetHoldoutPoolBudgets",
        "v1.GrantCredit",
        "v1.SetCreditLimit",
    }
    owned = {c.rpc for c in matrix.checks if c.scenario == "another principal's claim"}
    assert {label.split(".", 1)[1] for label in owned} == set(OWNED_RPCS)


def test_no_credential_appears_in_any_log_line(matrix: Matrix) -> None:
    needles = matrix.keys.needles()
    assert len(matrix.keys.signatures) > 300
    lines: list[tuple[str, str]] = []
    for name, daemon in matrix.daemons.items():
        lines += [(name, line) for line in daemon.stderr_lines()]
        lines += [(name, line) for line in daemon.stdout_lines()]
    lines += [("refused", line) for text in matrix.refused_startups for line in text.splitlines()]
    assert len(lines) > 500, "the daemons logged at debug level"
    leaks = [(name, line) for name, line in lines for needle in needles if needle in line]
    assert not leaks, f"{len(leaks)} log line(s) carry a credential, e.g. {leaks[0][0]}"


def test_refusals_are_logged_without_credentials(matrix: Matrix) -> None:
    refused = matrix.daemons["hmac"].events("rpc_refused")
    assert {e["code"] for e in refused} >= {"UNAUTHENTICATED", "PERMISSION_DENIED"}
    assert all(set(e) >= {"path", "code", "msg"} for e in refused)
    accepted = matrix.daemons["tokens"].events("rpc_accepted")
    agent_a = "bearer:" + sha256_hex(matrix.keys.agent_a)
    assert any(e["principal_id"] == agent_a and e["role"] == "agent" for e in accepted)
    hmac_accepted = matrix.daemons["hmac"].events("rpc_accepted")
    assert {e["principal_id"] for e in hmac_accepted} == {
        "hmac:" + sha256_hex("k1"),
        "hmac:" + sha256_hex("default"),
    }


def test_max_request_bytes_is_enforced_on_every_rpc(tmp_path: Path) -> None:
    """--max-request-bytes bounds every request before it is buffered or authenticated
    (DESIGN §6; RESOURCE_EXHAUSTED, spec 60 §6.1 option (a), docs/decisions.md D-S9)."""
    daemon = DaemonProcess(tmp_path / "data", extra_args=["--max-request-bytes", "1024"])
    with daemon:
        channel = daemon.start().channel()
        paths = [rpc.path for rpc in RPCS] + ["/grpc.health.v1.Health/Check"]
        for path in paths:
            call = channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
            # Field 1 (a length-delimited string) of 2000 bytes: a well-formed message.
            payload = b"\x0a\xd0\x0f" + b"x" * 2000
            try:
                call(payload, timeout=T)
            except grpc.RpcError as exc:
                failed: Any = exc
                assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (path, failed)
                assert "larger than max" in str(failed.details()), (path, failed.details())
            else:
                raise AssertionError(f"{path} accepted a 2 KiB request")
        # Below the limit the same RPC gets as far as the handler.
        health = channel.unary_unary(
            "/evidenceos.v2.EvidenceOS/Health", request_serializer=bytes,
            response_deserializer=bytes,
        )  # fmt: skip
        assert health(b"", timeout=T) is not None
