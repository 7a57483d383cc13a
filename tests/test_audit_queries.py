"""Every query in docs/audit.md runs with plain sqlite3 on a read-only copy of a database a real
daemon populated, and gives the answers the population makes true.

The population: two agents (bearer tokens) run claims in epoch 0 and, after a signed epoch
advance, in epoch 1; claims certify where a NullSpec makes them and not where none is active;
three capsules descend from one that its owner then revokes; operators sign records for two
oracles. Expected answers come from the gRPC replies and the population plan, never from the
tables the queries read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import signal
import sqlite3  # noqa: TID251 - the auditor's tool: plain sqlite3, read-only
import subprocess
from pathlib import Path
from typing import Any

import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos.client import BearerAuth, Client
from evidenceos.core.auth import hash_principal_id
from tests.support.claims import (
    PROBE_OFF_ENV,
    bernoulli_contract,
    create_request,
    install_nullspec,
    oracle_then_emit_wat,
    predictions_with_correct,
    synthetic_labels,
    wasm,
    write_epoch_config,
)
from tests.support.daemon import BIN_DIR, DaemonProcess, daemon_env, run_ctl
from tests.support.governance import K7_PUBLIC_HEX, K7_SEED, write_seed, write_trusted_keys
from tests.support.paths import REPO_ROOT
from tests.support.revocation import dependency_root

pytestmark = pytest.mark.process

AUDIT_DOC = REPO_ROOT / "docs" / "audit.md"
QUERY = re.compile(r"<!-- audit-query: ([a-z_]+) -->\n```sql\n(.*?)```", re.DOTALL)

CERT_HOLDOUT = "synthetic-audit-cert"  # NullSpec p = 1/1000: bucket 1 scores e = 1000 >= 320
PLAIN_HOLDOUT = "synthetic-audit-plain"  # no NullSpec: e = 1, never certifies
ORACLE = "builtin.accuracy"
OTHER_ORACLE = "other.oracle"
TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "audit": "tok-audit"}
ENV = {
    **PROBE_OFF_ENV,
    "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "1000000000000",
    "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "1000000000000",
}


def principal(name: str) -> str:
    return hash_principal_id("bearer", TOKENS[name])


def queries() -> dict[str, str]:
    found = QUERY.findall(AUDIT_DOC.read_text(encoding="utf-8"))
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"duplicate query names: {names}"
    return dict(found)


@dataclasses.dataclass
class Executed:
    name: str
    owner: str
    epoch: int
    claim_id: bytes
    response: Any

    @property
    def capsule_hash(self) -> bytes:
        return bytes(self.response.capsule_hash)


@dataclasses.dataclass
class Population:
    db: Path
    claims: dict[str, Executed]
    old_head: Any
    new_head: Any
    oracle_events: dict[str, set[str]]


def _run(client: Client, owner: str, epoch: int, name: str, holdout: str, deps=()) -> Executed:
    module = wasm(oracle_then_emit_wat(predictions_with_correct(synthetic_labels(holdout), 40)))
    request = create_request(
        name,
        holdout_ref=holdout,
        signals=pb.TopicSignalsV2(
            semantic_hash=hashlib.sha256(name.encode()).digest(),
            dependency_merkle_root=dependency_root(deps) if deps else b"",
        ),
    )
    created = client.create_claim_v2(request, request_id=f"create-{name}")
    artifacts = [(hashlib.sha256(module).digest(), "wasm")] + [(d, "dependency") for d in deps]
    client.commit_artifacts(created.claim_id, artifacts, module)
    client.freeze_gates(created.claim_id)
    response = client.execute_claim_v2(created.claim_id, request_id=f"execute-{name}")
    return Executed(name, owner, epoch, bytes(created.claim_id), response)


def _ctl_json(*args: str, operator: bool = False) -> dict[str, Any]:
    """``evidenceosctl ARGS --json`` (or ``evidenceos-operator``), which must succeed."""
    tool = BIN_DIR / ("evidenceos-operator" if operator else "evidenceosctl")
    result = subprocess.run(
        [str(tool), *args, "--json"],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    root = tmp_path_factory.mktemp("audit")
    data = root / "data"
    data.mkdir()
    write_epoch_config(data)
    seed = write_seed(root / "ops-k7.seed", K7_SEED)
    write_trusted_keys(data, {"ops-k7": K7_PUBLIC_HEX})
    install_nullspec(data, bernoulli_contract(holdout_ref=CERT_HOLDOUT, p=1 / 1000, alt=(0, 1)))
    (root / "manifest.json").write_text('{"calibration": 1}')
    (root / "proof.json").write_text('{"disjoint": true}')
    signing = ["--signing-key", str(seed), "--key-id", "ops-k7"]
    args = [
        "--insecure-synthetic-holdout",
        "--agent-tokens",
        f"{TOKENS['alice']},{TOKENS['bob']}",
        "--auditor-tokens",
        TOKENS["audit"],
    ]
    claims: dict[str, Executed] = {}
    events: dict[str, set[str]] = {ORACLE: set(), OTHER_ORACLE: set()}
    with DaemonProcess(data, extra_args=args, env=ENV) as daemon:
        daemon.start()
        alice = Client(daemon.address, auth=BearerAuth(TOKENS["alice"]))
        bob = Client(daemon.address, auth=BearerAuth(TOKENS["bob"]))
        auditor = Client(daemon.address, auth=BearerAuth(TOKENS["audit"]))
        try:
            # Epoch 0: one certified capsule (A) and one that is not (P).
            claims["A"] = _run(alice, "alice", 0, "audit-A", CERT_HOLDOUT)
            claims["P"] = _run(bob, "bob", 0, "audit-P", PLAIN_HOLDOUT)
            old_head = auditor.signed_tree_head()

            # Operators: records for two oracles, a TTL change, then epoch 1, applied by SIGHUP.
            for oracle in (ORACLE, OTHER_ORACLE):
                doc = _ctl_json(
                    "sign-oracle-record", "--data-dir", str(data), "--oracle-id", oracle,
                    "--ttl-epochs", "86400", *signing,
                    "--calibration-manifest-path", str(root / "manifest.json"),
                    "--disjointness-proof-path", str(root / "proof.json"),
                    "--disjointness-scope", f"global/{oracle}",
                    operator=True,
                )  # fmt: skip
                events[oracle].add(doc["event_id"])
            doc = _ctl_json(
                "oracle", "set-ttl", "--data-dir", str(data), "--oracle-id", ORACLE,
                "--ttl-epochs", "3600", *signing,
            )  # fmt: skip
            events[ORACLE].add(doc["event_id"])
            _ctl_json("epoch", "advance", "--data-dir", str(data), "--to", "1", *signing)
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for_log(
                lambda e: (
                    e.get("event") == "config_reload"
                    and e.get("trigger") == "sighup"
                    and "forced_epoch" in json.dumps(e.get("changed"))
                )
            )

            # Epoch 1: B and D depend on A, C on B; E stands alone. Then A is revoked.
            claims["B"] = _run(
                alice, "alice", 1, "audit-B", CERT_HOLDOUT, [claims["A"].capsule_hash]
            )
            claims["C"] = _run(bob, "bob", 1, "audit-C", CERT_HOLDOUT, [claims["B"].capsule_hash])
            claims["D"] = _run(
                alice, "alice", 1, "audit-D", CERT_HOLDOUT, [claims["A"].capsule_hash]
            )
            claims["E"] = _run(alice, "alice", 1, "audit-E", CERT_HOLDOUT)
            alice.revoke_claim(claims["A"].claim_id, "audit: bad data", request_id="revoke-A")
            new_head = auditor.signed_tree_head()
        finally:
            for client in (alice, bob, auditor):
                client.close()
        assert daemon.terminate() == 0
    copy = root / "copy" / "evidenceos.db"
    copy.parent.mkdir()
    backup = run_ctl("backup", "--data-dir", str(data), "--to", str(copy))
    assert backup.returncode == 0, backup.stderr
    copy.chmod(0o444)
    return Population(copy, claims, old_head, new_head, events)


def run_query(population: Population, name: str, **params: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{population.db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(queries()[name], params)]
    finally:
        conn.close()


def test_the_population_is_what_the_answers_assume(population: Population) -> None:
    certified = {name: c.response.certified for name, c in population.claims.items()}
    assert certified == {"A": True, "P": False, "B": True, "C": True, "D": True, "E": True}


def test_every_query_in_the_doc_is_checked() -> None:
    checked = {
        "certified_in_epoch",
        "descendants_of_revoked",
        "revocations_with_taint",
        "charges_by_principal",
        "governance_for_oracle",
        "head_extends",
    }
    assert set(queries()) == checked


def test_copy_is_read_only(population: Population) -> None:
    conn = sqlite3.connect(f"file:{population.db}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM accounts")
    finally:
        conn.close()


def test_certified_in_epoch(population: Population) -> None:
    for epoch in (0, 1):
        rows = run_query(population, "certified_in_epoch", epoch=epoch)
        expected = {
            c.claim_id.hex()
            for c in population.claims.values()
            if c.epoch == epoch and c.response.certified
        }
        assert {r["claim_id"] for r in rows} == expected
        assert [r["leaf_index"] for r in rows] == sorted(r["leaf_index"] for r in rows)
    (a,) = run_query(population, "certified_in_epoch", epoch=0)
    assert a["state_now"] == "REVOKED"  # certified then, revoked since
    assert a["capsule_hash"] == population.claims["A"].capsule_hash.hex()
    assert a["owner_principal_id"] == principal("alice")
    assert run_query(population, "certified_in_epoch", epoch=7) == []


def test_descendants_of_revoked(population: Population) -> None:
    claims = population.claims
    rows = run_query(population, "descendants_of_revoked", claim_id=claims["A"].claim_id.hex())
    got = {r["claim_id"]: r["depth"] for r in rows}
    assert got == {
        claims["B"].claim_id.hex(): 1,
        claims["D"].claim_id.hex(): 1,
        claims["C"].claim_id.hex(): 2,
    }
    assert {r["state_now"] for r in rows} == {"TAINTED"}
    unrevoked = run_query(population, "descendants_of_revoked", claim_id=claims["B"].claim_id.hex())
    assert unrevoked == []  # B is tainted, not revoked: no revocation starts a walk from it
    (revocation,) = run_query(population, "revocations_with_taint")
    assert revocation["claim_id"] == claims["A"].claim_id.hex()
    assert revocation["tainted"] == 3
    assert revocation["revoked_by"] == principal("alice")
    assert revocation["reason"] == "audit: bad data"


def test_charges_by_principal(population: Population) -> None:
    rows = {r["principal_id"]: r for r in run_query(population, "charges_by_principal")}
    alice, bob = rows[principal("alice")], rows[principal("bob")]
    runs = {"alice": 0, "bob": 0}
    for claim in population.claims.values():
        runs[claim.owner] += 1
    assert (alice["capsules"], bob["capsules"]) == (runs["alice"], runs["bob"]) == (4, 2)
    # Every execution ran the same guest under the same limits: one charge each.
    assert alice["credit_charged"] > 0
    assert alice["credit_charged"] * runs["bob"] == bob["credit_charged"] * runs["alice"]
    assert alice["incidents"] == bob["incidents"] == 0
    assert principal("audit") not in rows  # reading costs nothing
    assert next(iter(rows)) == principal("alice")  # largest charge first


def test_governance_for_oracle(population: Population) -> None:
    for oracle, expected in population.oracle_events.items():
        rows = run_query(population, "governance_for_oracle", oracle_id=oracle)
        assert {r["event_id"] for r in rows} == expected
        assert all(r["key_id"] == "ops-k7" and r["signed"] == 1 for r in rows)
        assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    types = [
        r["event_type"] for r in run_query(population, "governance_for_oracle", oracle_id=ORACLE)
    ]
    assert types == ["oracle_record_signed", "oracle_ttl_set"]
    assert run_query(population, "governance_for_oracle", oracle_id="no.such.oracle") == []


def _extends(population: Population, old: Any, new: Any) -> dict[str, Any]:
    (row,) = run_query(
        population,
        "head_extends",
        old_size=old.tree_size,
        old_root=old.root_hash.hex(),
        new_size=new.tree_size,
        new_root=new.root_hash.hex().upper(),  # hex case does not matter
    )
    return row


def test_head_extends(population: Population) -> None:
    old, new = population.old_head, population.new_head
    assert 0 < old.tree_size < new.tree_size
    assert _extends(population, old, new) == {
        "old_issued": 1,
        "new_issued": 1,
        "no_conflicting_root": 1,
        "sizes_in_order": 1,
        "extends": 1,
    }
    assert _extends(population, new, old)["extends"] == 0  # backwards
    forged = dataclasses.replace(old, root_hash=hashlib.sha256(b"another log").digest())
    row = _extends(population, forged, new)
    assert row["extends"] == 0 and row["old_issued"] == 0 and row["no_conflicting_root"] == 0
