"""Helpers for claim-lifecycle tests: epoch configs, WAT guests, a gRPC driver, NullSpec installs
and a dump of every table of the database.

Everything here talks to the real stack: guests are WAT compiled by ``wasmtime.wat2wasm``, claims
go through the v2 stub of a running daemon (subprocess or in-process), NullSpec contracts are
written with the store's own table module before (or while) the daemon runs, and
:func:`db_snapshot` reads the database with the standard library's ``sqlite3`` (or, for a server
running in the test's own process, through apsw: see :data:`Engine`) so that "a refused request
leaves no trace" is checked on the bytes SQLite holds, not on what the package reports.

Synthetic holdout labels are recomputed here from spec 30 §6 (``label[i] = (H(ref)[i mod 32] XOR
(31·i mod 256)) & 1``) rather than imported, so a test chooses its oracle bucket from the spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sqlite3  # noqa: TID251 - an independent reader of the daemon's database
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import apsw
import grpc
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc
from evidenceos.core.claim import ClaimRecord, PlnConfig
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.ledger import ConservationLedger
from evidenceos.core.nullspec import (
    EProcessKind,
    LikelihoodRatioFixedAlt,
    NullSpecContract,
    NullSpecKind,
    ParametricBernoulli,
)
from evidenceos.core.oracle import OracleResolution, compute_resolution_hash
from evidenceos.sandbox import Sandbox
from evidenceos.service.claims import ClaimService, KernelSettings
from evidenceos.service.log_service import LogService
from evidenceos.store import nullspecs as nullspecs_table
from evidenceos.store.db import Store
from evidenceos.store.holdouts import HoldoutRegistry
from evidenceos.store.keys import load_keyring
from tests.support.daemon import DaemonProcess

#: Per-RPC deadline in seconds.
RPC_TIMEOUT = 30.0

EPOCH_REF = "epoch/default"
EPOCH_CONFIG: dict[str, Any] = {"epoch_size": 16, "pln": {"target_fuel": 100, "max_fuel": 500}}
DB_FILENAME = "evidenceos.db"
ORACLE_ID = "builtin.accuracy"
SYNTHETIC_LEN = 128

#: Worst-case reservation of a 4-symbol legacy claim (D-K2): ceil(log2(4) · n_max · 2) + 0.
WORST_CASE_FAST_4 = 2 * 32 * 2
WORST_CASE_HEAVY_4 = 2 * 8 * 2

#: The exporter's bookkeeping row in ``meta`` (a view of the log written off the reply path).
EXPORT_MIRROR_KEY = "etl_log_mirror"


# --------------------------------------------------------------------------------------------
# Data directories and daemons


def write_epoch_config(
    data_dir: Path, ref: str = EPOCH_REF, config: Mapping[str, Any] | None = None
) -> Path:
    """``<data>/epoch_configs/<ref>.json`` (spec 20 §3.4 step 10); PLN 100/500, epoch 16."""
    path = data_dir / "epoch_configs" / f"{ref}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config if config is not None else EPOCH_CONFIG)))
    return path


#: Probe-detector thresholds far above anything one test sends (spec 30 §8; ``0`` would mean
#: "default"). Lifecycle tests create many topics within seconds, which the default detector
#: rightly throttles after 4 distinct topics; the probe detector has tests of its own.
PROBE_OFF_ENV: dict[str, str] = {
    f"EVIDENCEOS_PROBE_{verdict}_{metric}": str(limit)
    for verdict, limit in (("THROTTLE", 10**6), ("ESCALATE", 2 * 10**6), ("FREEZE", 3 * 10**6))
    for metric in ("TOTAL", "UNIQUE_SEMANTIC", "DISTINCT_TOPICS")
}


def start_claims_daemon(data_dir: Path, env: Mapping[str, str] | None = None) -> DaemonProcess:
    """A serving daemon with synthetic holdouts, the default epoch config written and the probe
    detector out of the way; ``env`` adds to (and may override) :data:`PROBE_OFF_ENV`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_epoch_config(data_dir)
    daemon = DaemonProcess(
        data_dir, extra_args=["--insecure-synthetic-holdout"], env={**PROBE_OFF_ENV, **(env or {})}
    )
    return daemon.start()


# --------------------------------------------------------------------------------------------
# Guests (guest ABI v2, spec 30 §5.2)

EMIT_IMPORT = '(import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))'
QUERY_IMPORT = '(import "env" "oracle_query" (func $query (param i32 i32) (result i32)))'
PREDICTIONS_OFFSET = 16


def wat_string(data: bytes) -> str:
    """``data`` as a WAT string literal body (every byte escaped)."""
    return "".join(f"\\{b:02x}" for b in data)


def wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def emit_only_wat(symbol: bytes = b"\x01") -> str:
    """Emits ``symbol`` and nothing else: zero oracle calls."""
    return (
        f'(module {EMIT_IMPORT} (memory (export "memory") 1)'
        f' (data (i32.const 0) "{wat_string(symbol)}")'
        f' (func (export "run") i32.const 0 i32.const {len(symbol)} call $emit drop))'
    )


def oracle_then_emit_wat(predictions: bytes, symbol: bytes = b"\x01", queries: int = 1) -> str:
    """Asks the oracle ``queries`` times about ``predictions`` (a data segment), then emits."""
    query = f" i32.const {PREDICTIONS_OFFSET} i32.const {len(predictions)} call $query drop"
    return (
        f'(module {QUERY_IMPORT} {EMIT_IMPORT} (memory (export "memory") 1)'
        f' (data (i32.const 0) "{wat_string(symbol)}")'
        f' (data (i32.const {PREDICTIONS_OFFSET}) "{wat_string(predictions)}")'
        f' (func (export "run"){query * queries}'
        f" i32.const 0 i32.const {len(symbol)} call $emit drop))"
    )


def trap_wat() -> str:
    """Traps on ``unreachable`` before emitting (ASPEC accepts it)."""
    return f'(module {EMIT_IMPORT} (memory (export "memory") 1) (func (export "run") unreachable))'


def infinite_loop_wat() -> str:
    """``(loop br 0)``: ASPEC refuses it in every lane (no canonical counter)."""
    return (
        f'(module {EMIT_IMPORT} (memory (export "memory") 1)'
        ' (func (export "run") (loop br 0) i32.const 0 i32.const 1 call $emit drop))'
    )


def counted_loops_wat(outer: int = 10_000, inner: int = 10_000) -> str:
    """Two nested canonical counter loops (ASPEC's heavy-lane pattern, bounds <= 10,000).

    ``outer · inner`` iterations of ~8 fuel each: far beyond the heavy lane's 250,000 fuel, so
    the guest runs out of fuel before it emits. The inner counter is also initialised before the
    outer loop because ASPEC's scan of the outer loop finds the inner pattern first (QUIRK)."""
    return (
        f'(module {EMIT_IMPORT} (memory (export "memory") 1) (data (i32.const 0) "\\01")'
        ' (func (export "run") (local $i i32) (local $j i32)'
        " i32.const 0 local.set $i i32.const 0 local.set $j"
        " (loop $outer i32.const 0 local.set $j"
        " (loop $inner local.get $j i32.const 1 i32.add local.set $j"
        f" local.get $j i32.const {inner} i32.lt_u br_if 0)"
        " local.get $i i32.const 1 i32.add local.set $i"
        f" local.get $i i32.const {outer} i32.lt_u br_if 0)"
        " i32.const 0 i32.const 1 call $emit drop))"
    )


def memory_grow_wat(pages: int = 8) -> str:
    """Grows memory by ``pages`` and traps with ``unreachable`` if the grow fails (-1)."""
    return (
        f'(module {EMIT_IMPORT} (memory (export "memory") 1) (data (i32.const 0) "\\01")'
        f' (func (export "run") (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1))'
        " (then unreachable)) i32.const 0 i32.const 1 call $emit drop))"
    )


def unexported_memory_wat(pages: int) -> str:
    """Declares ``pages`` of memory without exporting it, then emits (an instantiation-time
    memory-limit hit when ``pages`` exceeds the lane limit)."""
    return (
        f"(module {EMIT_IMPORT} (memory {pages})"
        ' (func (export "run") i32.const 0 i32.const 1 call $emit drop))'
    )


def non_canonical_wat(symbol: bytes = b"\x09") -> str:
    """Emits a byte that is not a canonical symbol (0x09 with 4 symbols: value >= num_symbols)."""
    return emit_only_wat(symbol)


def heavy_flagged_wat(memory_pages: int) -> str:
    """A fast-lane module that ASPEC's Kolmogorov proxy routes to HEAVY at commit.

    10,240 data bytes of entropy ratio exactly 0.75 give a proxy of 61,440 > 50,000 (heavy flag)
    and < 75,000 (still accepted in HighAssurance); the values 0..63 hold no compression magic.
    """
    payload = bytes(range(64)) * 160
    return (
        f'(module {EMIT_IMPORT} (memory (export "memory") {memory_pages})'
        f' (data (i32.const 1024) "{wat_string(payload)}") (data (i32.const 0) "\\01")'
        ' (func (export "run") i32.const 0 i32.const 1 call $emit drop))'
    )


# --------------------------------------------------------------------------------------------
# Synthetic holdouts (spec 30 §6)


def synthetic_labels(ref: str, length: int = SYNTHETIC_LEN) -> bytes:
    handle = hashlib.sha256(ref.encode()).digest()
    return bytes((handle[i % 32] ^ ((i * 31) % 256)) & 1 for i in range(length))


def synthetic_handle(ref: str) -> bytes:
    return hashlib.sha256(ref.encode()).digest()


def predictions_with_correct(labels: bytes, correct: int) -> bytes:
    """Right on the first ``correct`` rows, wrong on the rest: accuracy ``correct / len``."""
    return bytes(y if i < correct else 1 - y for i, y in enumerate(labels))


# --------------------------------------------------------------------------------------------
# Driving the lifecycle over gRPC


def create_request(
    claim_name: str,
    *,
    holdout_ref: str,
    lane: str = "fast",
    oracle_num_symbols: int = 4,
    access_credit: int = 1024,
    alpha_micros: int = 50_000,
    epoch_config_ref: str = EPOCH_REF,
    output_schema_id: str = "legacy/v1",
    oracle_id: str = ORACLE_ID,
    nullspec_id: str = "",
    epoch_size: int = 16,
    signals: pb.TopicSignalsV2 | None = None,
) -> pb.CreateClaimV2Request:
    request = pb.CreateClaimV2Request(
        claim_name=claim_name,
        holdout_ref=holdout_ref,
        epoch_size=epoch_size,
        oracle_num_symbols=oracle_num_symbols,
        access_credit=access_credit,
        oracle_id=oracle_id,
        nullspec_id=nullspec_id,
        metadata=pb.ClaimMetadataV2(
            lane=lane,
            alpha_micros=alpha_micros,
            epoch_config_ref=epoch_config_ref,
            output_schema_id=output_schema_id,
        ),
    )
    if signals is not None:
        request.signals.CopyFrom(signals)
    return request


def commit_request(claim_id: bytes, module: bytes) -> pb.CommitArtifactsRequest:
    """One ``wasm`` artifact declaring ``H(module)`` (spec 20 §3.5)."""
    return pb.CommitArtifactsRequest(
        claim_id=claim_id,
        artifacts=[pb.Artifact(artifact_hash=hashlib.sha256(module).digest(), kind="wasm")],
        wasm_module=module,
    )


_CLIENT_IDS = itertools.count()


@dataclass
class ClaimClient:
    """A v2 stub plus fresh ``x-request-id`` values for every idempotent call."""

    stub: pb_grpc.EvidenceOSStub
    prefix: str = field(default_factory=lambda: f"client{next(_CLIENT_IDS)}")
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def for_daemon(cls, daemon: DaemonProcess) -> ClaimClient:
        return cls(daemon.v2)

    @classmethod
    def for_channel(cls, channel: grpc.Channel) -> ClaimClient:
        return cls(pb_grpc.EvidenceOSStub(channel))

    def request_id(self, what: str = "req") -> str:
        return f"{self.prefix}-{what}-{next(self._counter)}"

    def create(
        self, request: pb.CreateClaimV2Request, request_id: str | None = None
    ) -> pb.CreateClaimV2Response:
        rid = request_id if request_id is not None else self.request_id("create")
        return self.stub.CreateClaimV2(
            request, metadata=(("x-request-id", rid),), timeout=RPC_TIMEOUT
        )

    def commit(self, claim_id: bytes, module: bytes) -> pb.CommitArtifactsResponse:
        return self.stub.CommitArtifacts(commit_request(claim_id, module), timeout=RPC_TIMEOUT)

    def freeze(self, claim_id: bytes) -> pb.FreezeGatesResponse:
        return self.stub.FreezeGates(pb.FreezeGatesRequest(claim_id=claim_id), timeout=RPC_TIMEOUT)

    def seal(self, claim_id: bytes) -> pb.SealClaimResponse:
        return self.stub.SealClaim(pb.SealClaimRequest(claim_id=claim_id), timeout=RPC_TIMEOUT)

    def execute(self, claim_id: bytes, request_id: str | None = None) -> pb.ExecuteClaimV2Response:
        rid = request_id if request_id is not None else self.request_id("execute")
        return self.stub.ExecuteClaimV2(
            pb.ExecuteClaimV2Request(claim_id=claim_id),
            metadata=(("x-request-id", rid),),
            timeout=RPC_TIMEOUT,
        )

    def fetch(self, claim_id: bytes) -> pb.FetchCapsuleResponse:
        return self.stub.FetchCapsule(
            pb.FetchCapsuleRequest(claim_id=claim_id), timeout=RPC_TIMEOUT
        )

    def head(self) -> pb.GetSignedTreeHeadResponse:
        return self.stub.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=RPC_TIMEOUT)

    def public_key(self, key_id: bytes = b"") -> pb.GetPublicKeyResponse:
        return self.stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key_id), timeout=RPC_TIMEOUT)

    def consistency(self, first: int, second: int) -> pb.GetConsistencyProofResponse:
        return self.stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
            timeout=RPC_TIMEOUT,
        )

    def sealed(self, request: pb.CreateClaimV2Request, module: bytes) -> bytes:
        """create → commit → FreezeGates → SealClaim; returns the sealed claim's id."""
        created = self.create(request)
        assert created.state == pb.CLAIM_STATE_UNCOMMITTED
        assert self.commit(created.claim_id, module).state == pb.CLAIM_STATE_COMMITTED
        assert self.freeze(created.claim_id).state == pb.CLAIM_STATE_SEALED
        assert self.seal(created.claim_id).state == pb.CLAIM_STATE_SEALED
        return bytes(created.claim_id)

    def run(
        self, request: pb.CreateClaimV2Request, module: bytes
    ) -> tuple[bytes, pb.ExecuteClaimV2Response]:
        """The whole lifecycle up to ExecuteClaimV2; returns (claim_id, execute response)."""
        claim_id = self.sealed(request, module)
        return claim_id, self.execute(claim_id)


def rpc_error(call: Any) -> tuple[grpc.StatusCode, str]:
    """Run a zero-argument callable that must fail with an RpcError; (code, details)."""
    try:
        call()
    except grpc.RpcError as exc:
        failed: Any = exc
        return failed.code(), str(failed.details())
    raise AssertionError("the RPC succeeded but was expected to fail")


# --------------------------------------------------------------------------------------------
# NullSpec contracts (spec 50 §3.4), installed straight into the store


def nullspec_contract(
    *,
    holdout_ref: str,
    num_symbols: int,
    kind: NullSpecKind,
    eprocess: EProcessKind,
    oracle_id: str = ORACLE_ID,
    epoch_created: int = 0,
    ttl_epochs: int = 1_000_000,
) -> NullSpecContract:
    """A signed contract for (oracle_id, holdout) whose resolution hash is the claim's.

    ``holdout_handle`` is the holdout *ref* string, as ``nullspec install --holdout`` writes it
    (spec 50 §4); the resolution hash is that of ``OracleResolution(num_symbols=n)``, the one a
    claim pins at freeze.
    """
    unsigned = NullSpecContract(
        oracle_id=oracle_id,
        oracle_resolution_hash=compute_resolution_hash(OracleResolution(num_symbols=num_symbols)),
        holdout_handle=holdout_ref,
        epoch_created=epoch_created,
        ttl_epochs=ttl_epochs,
        kind=kind,
        eprocess=eprocess,
        created_by="test-authority",
    )
    return unsigned.signed(Ed25519PrivateKey.generate())


def bernoulli_contract(
    *, holdout_ref: str, p: float, alt: Sequence[float], num_symbols: int = 4
) -> NullSpecContract:
    """``ParametricBernoulli{p}`` + ``LikelihoodRatioFixedAlt{alt}``: bucket b scores
    ``alt[b] / p0(b)`` with ``p0(1) = p``, ``p0(0) = 1 - p`` (spec 30 §3.2 a)."""
    return nullspec_contract(
        holdout_ref=holdout_ref,
        num_symbols=num_symbols,
        kind=ParametricBernoulli(p),
        eprocess=LikelihoodRatioFixedAlt(tuple(alt)),
    )


def install_nullspec(data_dir: Path, contract: NullSpecContract, *, activate: bool = True) -> bytes:
    """Write the contract (and, by default, its activation for (oracle_id, holdout)) through
    ``evidenceos.store.nullspecs``; safe while a daemon runs (SQLite busy timeout)."""
    nullspec_id = bytes(contract.nullspec_id)
    now = int(time.time() * 1000)
    store = Store(data_dir)
    try:

        def write(conn: Any) -> None:
            nullspecs_table.put_nullspec(
                conn, nullspec_id, contract.oracle_id, contract.to_json(), now
            )
            if activate:
                nullspecs_table.activate(
                    conn, contract.oracle_id, contract.holdout_handle, nullspec_id, now
                )

        store.write(write)
    finally:
        store.close()
    return nullspec_id


# --------------------------------------------------------------------------------------------
# The database, read with plain sqlite3

Snapshot = dict[str, list[tuple[Any, ...]]]


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


#: Which SQLite library reads the database. Plain ``sqlite3`` (the system library) is the
#: independent reader for a daemon running in *another* process. A server running in *this*
#: process holds apsw connections, and apsw bundles its own SQLite: two SQLite libraries on one
#: file in one process defeat each other's POSIX locks (sqlite.org/howtocorrupt.html §2.2.1 —
#: seen here as a SIGBUS on the WAL index), so in-process tests read through apsw instead.
Engine = Literal["sqlite3", "apsw"]


class _Reader(Protocol):
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class _Sqlite3Reader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()


class _ApswReader:
    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(sql, tuple(params))]


@contextmanager
def _connect(path: Path, engine: Engine) -> Iterator[_Reader]:
    """A read-only connection; everything read inside shares one snapshot of the database."""
    if engine == "apsw":
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.setbusytimeout(10_000)
        try:
            conn.execute("BEGIN")
            yield _ApswReader(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        lite.execute("BEGIN")
        yield _Sqlite3Reader(lite)
        lite.execute("COMMIT")
    finally:
        lite.close()


def db_snapshot(
    data_dir: Path, *, ignore_export_mirror: bool = True, engine: Engine = "sqlite3"
) -> Snapshot:
    """Every row of every table, ordered by all columns; values exactly as SQLite returns them.

    The exporter's ``meta.etl_log_mirror`` row is left out by default: it records how much of the
    log the background exporter has copied to ``etl.log`` and may be written a moment after an
    earlier, successful request — it is not state any request writes.
    """
    with _connect(db_path(data_dir), engine) as reader:
        tables = [
            str(name)
            for (name,) in reader.rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        out: Snapshot = {}
        for table in tables:
            ((width,),) = reader.rows("SELECT count(*) FROM pragma_table_info(?)", (table,))
            order = ", ".join(str(i) for i in range(1, int(width) + 1))
            rows = reader.rows(f'SELECT * FROM "{table}" ORDER BY {order}')  # noqa: S608
            if ignore_export_mirror and table == "meta":
                rows = [r for r in rows if r[0] != EXPORT_MIRROR_KEY]
            out[table] = rows
    return out


def snapshot_diff(before: Snapshot, after: Snapshot) -> dict[str, tuple[int, int]]:
    """Tables whose rows differ, with (rows before, rows after): for assertion messages."""
    names = sorted(set(before) | set(after))
    return {
        name: (len(before.get(name, [])), len(after.get(name, [])))
        for name in names
        if before.get(name) != after.get(name)
    }


def query(
    data_dir: Path, sql: str, params: Sequence[Any] = (), *, engine: Engine = "sqlite3"
) -> list[tuple[Any, ...]]:
    with _connect(db_path(data_dir), engine) as reader:
        return reader.rows(sql, params)


def claim_record(data_dir: Path, claim_id: bytes) -> dict[str, Any]:
    rows = query(data_dir, "SELECT record_json FROM claims WHERE claim_id = ?", (claim_id,))
    assert rows, f"claim {claim_id.hex()} is not in the database"
    record: dict[str, Any] = json.loads(rows[0][0])
    return record


def claim_state(data_dir: Path, claim_id: bytes) -> str | None:
    rows = query(data_dir, "SELECT state FROM claims WHERE claim_id = ?", (claim_id,))
    return None if not rows else str(rows[0][0])


def topic_pool(data_dir: Path, topic_id: bytes) -> dict[str, Any] | None:
    rows = query(data_dir, "SELECT pool_json FROM topic_pools WHERE topic_id = ?", (topic_id,))
    return None if not rows else dict(json.loads(rows[0][0]))


def holdout_pool(data_dir: Path, holdout_ref: str, principal: str = "") -> dict[str, Any] | None:
    rows = query(
        data_dir,
        "SELECT pool_json FROM holdout_pools WHERE holdout_handle = ? AND principal_id = ?",
        (synthetic_handle(holdout_ref), principal),
    )
    return None if not rows else dict(json.loads(rows[0][0]))


def account(data_dir: Path, principal: str = "anonymous") -> dict[str, int] | None:
    rows = query(
        data_dir,
        "SELECT credit_balance, burned_total, denied_total, credit_limit FROM accounts "
        "WHERE principal_id = ?",
        (principal,),
    )
    if not rows:
        return None
    balance, burned, denied, limit = rows[0]
    return {
        "credit_balance": balance,
        "burned_total": burned,
        "denied_total": denied,
        "credit_limit": limit,
    }


def leaf_hashes(data_dir: Path, *, engine: Engine = "sqlite3") -> list[bytes]:
    rows = query(data_dir, "SELECT leaf_hash FROM log_leaves ORDER BY leaf_index", engine=engine)
    return [bytes(h) for (h,) in rows]


def sample_claim_record(name: str) -> ClaimRecord:
    """A fresh UNCOMMITTED claim record (FAST lane, synthetic holdout, PLN 100/500) for unit
    tests of claim encoding and the claim caches; vary it with ``evolve``."""
    claim_id = hashlib.sha256(name.encode()).digest()
    return ClaimRecord(
        claim_id=claim_id,
        owner_principal_id="alice",
        claim_name=name,
        topic_id=hashlib.sha256(b"t" + claim_id).digest(),
        holdout_ref="synthetic-x",
        holdout_handle=bytes(range(32)),
        holdout_len=128,
        oracle_id="builtin.accuracy",
        nullspec_id="",
        lane="fast",
        requested_lane="fast",
        alpha_micros=50_000,
        alpha=0.05,
        epoch_config_ref="epoch/default",
        output_schema_id="legacy/v1",
        schema="EVIDENCEOS_SC_V0",
        epoch_size=16,
        oracle_num_symbols=4,
        access_credit=1024,
        state=ClaimState.UNCOMMITTED,
        ledger=ConservationLedger.create(0.05, k_bits_budget=1024.0, access_credit_budget=1024.0),
        created_at_ms=1_700_000_000_000,
        pln=PlnConfig(100, 500),
    )


def claim_services(
    data_dir: Path, settings: KernelSettings | None = None, sandbox: Sandbox | None = None
) -> tuple[Store, LogService, ClaimService]:
    """The store, started log and claim service wired as the daemon wires them, over the default
    epoch config and synthetic holdouts, for in-process service tests (the caller closes the
    store)."""
    write_epoch_config(data_dir)
    store = Store(data_dir)
    log = LogService(store, load_keyring(data_dir, allow_generate=True))
    log.start()
    claims = ClaimService(
        store,
        log,
        sandbox or Sandbox(),
        HoldoutRegistry(data_dir, allow_plaintext=False, synthetic=True, env={}),
        settings or KernelSettings(),
    )
    return store, log, claims


def same_value(a: Any, b: Any) -> bool:
    """Equal, with the same types and dict orders all the way down (NaN equal to itself)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(
            same_value(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return bool(b != b)
    return bool(a == b)
