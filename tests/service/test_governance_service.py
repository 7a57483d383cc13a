"""GovernanceService: the NullSpec registry cache and its fail-closed gate, the production-mode
execution checks, and the chained-event entry point other services use (spec 50 §3.6, §6.3,
§6.5; DESIGN §6, §9)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evidenceos.core.governance import GovernanceEvent, OperatorKeyId, signing_key_from_seed
from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    NullSpecContract,
    sign_detached,
)
from evidenceos.errors import ConfigError, FailedPrecondition
from evidenceos.service.governance import (
    REGISTRY_UNHEALTHY,
    GovernancePaths,
    GovernanceService,
    GovernanceSettings,
    Signer,
)
from evidenceos.service.log_service import LogService
from evidenceos.store import governance as gov_table
from evidenceos.store import log as log_table
from evidenceos.store.db import Store
from evidenceos.store.keys import load_keyring
from tests.support.datadir import append_entries
from tests.support.governance import (
    K7_PUBLIC_HEX,
    K7_SEED,
    K9_PUBLIC_HEX,
    K9_SEED,
    write_trusted_keys,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    append_entries(data_dir, range(1))
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX})
    return data_dir


@pytest.fixture
def open_service(data_dir: Path) -> Iterator[Any]:
    stores: list[Store] = []

    def open_(*, production: bool = False, clock: Clock | None = None) -> GovernanceService:
        store = Store(data_dir)
        stores.append(store)
        return GovernanceService(
            store,
            LogService(store, load_keyring(data_dir, allow_generate=False)),
            GovernancePaths.for_data_dir(data_dir),
            GovernanceSettings(production_mode=production, registry_reload_interval_s=30.0),
            monotonic=clock or Clock(),
        )

    yield open_
    for store in stores:
        store.close()


def contract(holdout: str = "h1") -> NullSpecContract:
    return NullSpecContract(
        oracle_id="settle",
        oracle_resolution_hash=bytes([1]) * 32,
        holdout_handle=holdout,
        epoch_created=0,
        ttl_epochs=100,
        kind=DiscreteBuckets((0.5, 0.5)),
        eprocess=DirichletMultinomialMixture((1.0, 1.0)),
        created_by="op1",
    ).signed(signing_key_from_seed(K9_SEED))


def publish(data_dir: Path, c: NullSpecContract) -> Path:
    """Registry layout of spec 50 §3.6: nullspecs/<oracle_id>/<id>.json + .sig, keyring op1."""
    keys = data_dir / "trusted-nullspec-keys"
    keys.mkdir(exist_ok=True)
    (keys / "op1.pub").write_text(K9_PUBLIC_HEX)
    folder = data_dir / "nullspec-registry" / "nullspecs" / c.oracle_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{c.id_hex}.json").write_text(json.dumps(c.to_json(), indent=2))
    sig = folder / f"{c.id_hex}.sig"
    sig.write_text(sign_detached(c, signing_key_from_seed(K9_SEED)))
    return sig


def test_registry_failure_fails_execution_closed_until_a_reload_succeeds(
    data_dir: Path, open_service: Any
) -> None:
    published = contract()
    sig = publish(data_dir, published)
    clock = Clock()
    service = open_service(production=True, clock=clock)
    service.start()
    assert service.registry.status == "healthy"
    service.require_executable(published.nullspec_id)
    with pytest.raises(FailedPrecondition, match="active nullspec id not in registry"):
        service.require_executable(contract("h2").nullspec_id)
    with pytest.raises(FailedPrecondition, match="missing active nullspec"):
        service.require_executable(None)
    # The registry breaks; the cache is used until the reload interval has passed.
    saved = sig.read_text()
    sig.unlink()
    clock.now += 10
    service.require_executable(published.nullspec_id)
    clock.now += 30
    with pytest.raises(FailedPrecondition, match=REGISTRY_UNHEALTHY):
        service.require_executable(published.nullspec_id)
    assert not service.policy_ok()
    # Restored: still closed until the next attempt, then open again.
    sig.write_text(saved)
    with pytest.raises(FailedPrecondition, match=REGISTRY_UNHEALTHY):
        service.require_executable(published.nullspec_id)
    clock.now += 30
    service.require_executable(published.nullspec_id)
    assert service.policy_ok()


def test_dev_mode_without_registry_is_open_but_a_broken_one_fails_closed(
    data_dir: Path, open_service: Any
) -> None:
    service = open_service()
    service.start()
    assert service.registry.status == "absent" and service.policy_ok()
    service.require_executable(None)
    (data_dir / "nullspec-registry" / "nullspecs" / "settle").mkdir(parents=True)
    (data_dir / "nullspec-registry" / "nullspecs" / "settle" / "bad.json").write_text("{}")
    outcome = service.reload()
    assert not outcome.ok and outcome.error is not None
    assert REGISTRY_UNHEALTHY in outcome.error and "bad.json" in outcome.error
    with pytest.raises(FailedPrecondition, match=REGISTRY_UNHEALTHY):
        service.require_executable(None)


def test_production_without_registry_fails_closed(open_service: Any) -> None:
    service = open_service(production=True)
    service.start()  # not fatal at start-up (spec 50 §6.1 step 7) ...
    assert service.registry.status == "unhealthy"
    with pytest.raises(FailedPrecondition, match=REGISTRY_UNHEALTHY):
        service.require_executable(contract().nullspec_id)  # ... but nothing executes


def test_production_refuses_an_unsigned_staged_activation(
    data_dir: Path, open_service: Any
) -> None:
    dev = open_service()
    c = contract()
    dev.install_nullspec(c, None)
    dev.stage_activation("settle", "h1", c.id_hex, None)  # dev mode: unsigned is accepted
    with pytest.raises(ConfigError, match="signed governance event required"):
        open_service(production=True).start()
    signer = Signer.from_seed("ops-k1", K7_SEED)
    dev.stage_activation("settle", "h1", c.id_hex, signer)
    policy = open_service(production=True).start()
    assert policy.activations == {("settle", "h1"): c.nullspec_id}


def test_append_governance_event_chains_and_logs(data_dir: Path, open_service: Any) -> None:
    """The entry point other services (credit grants, limit changes) use."""
    service = open_service()
    first = GovernanceEvent("credit_grant", 1_700_000_000, OperatorKeyId(""), {"amount": 5})
    second = GovernanceEvent("credit_limit_set", 1_700_000_001, OperatorKeyId(""), {"limit": 2**60})

    def write(conn: Any) -> tuple[int, int]:
        return (
            gov_table.append_governance_event(conn, service.log, first, 1),
            gov_table.append_governance_event(conn, service.log, second, 2),
        )

    leaves = service.store.write(write)
    events = service.events()
    assert [e.leaf_index for e in events] == list(leaves)
    assert events[1].chained.prev_event_hash == events[0].stored_event_hash
    assert service.chain_problems() == []
    with service.store.read() as conn:
        leaf = json.loads(log_table.get_leaf(conn, leaves[1]).payload)
    assert leaf["kind"] == "governance" and leaf["payload"] == {"limit": str(2**60)}
    assert events[1].event.payload == {"limit": 2**60}  # exact in the chain


def test_governance_exports_share_the_exporters_lock() -> None:
    from evidenceos.store.export import EXPORT_LOCK

    assert gov_table._EXPORT_LOCK == EXPORT_LOCK
