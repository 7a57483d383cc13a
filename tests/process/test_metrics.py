"""The metrics endpoint of a running daemon, scraped over HTTP and read with prometheus_client's
own parser: every series docs/metrics.md promises, with values checked against the gRPC replies
and the database."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos.config import DEFAULT_METRICS_LISTEN
from tests.support.claims import (
    ClaimClient,
    create_request,
    oracle_then_emit_wat,
    predictions_with_correct,
    query,
    rpc_error,
    start_claims_daemon,
    synthetic_labels,
    trap_wat,
    wasm,
)
from tests.support.daemon import DaemonProcess, run_to_exit

pytestmark = pytest.mark.process

HOLDOUT = "synthetic-metrics"
V2 = "/evidenceos.v2.EvidenceOS/"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: DaemonProcess) -> tuple[str, str]:
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    """A daemon after one good execution, one incident, one bad request and one SIGHUP."""
    data_dir = tmp_path_factory.mktemp("metrics") / "data"
    daemon = start_claims_daemon(data_dir)
    try:
        client = ClaimClient.for_daemon(daemon)
        module = wasm(oracle_then_emit_wat(predictions_with_correct(synthetic_labels(HOLDOUT), 40)))
        client.run(create_request("metrics-ok", holdout_ref=HOLDOUT), module)
        trap_id = client.sealed(
            create_request("metrics-trap", holdout_ref=HOLDOUT), wasm(trap_wat())
        )
        rpc_error(lambda: client.execute(trap_id))
        rpc_error(lambda: daemon.v2.GetCapsule(pb.GetCapsuleRequest(claim_id=b"short")))
        stream: Any = daemon.v2.WatchRevocations(pb.WatchRevocationsRequest())
        next(iter(stream))  # the first snapshot, then the client walks away
        stream.cancel()
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (
            value(parse(scrape(daemon)[1])[0], "evidenceos_config_reloads_total", outcome="ok") < 1
        ):
            assert time.monotonic() < deadline, (
                "SIGHUP reload not counted:\n" + daemon.stderr_text()
            )
            time.sleep(0.05)
        yield daemon, data_dir
    finally:
        daemon.kill()


def test_endpoint_is_prometheus_text(exercised: tuple[DaemonProcess, Path]) -> None:
    daemon, _ = exercised
    content_type, text = scrape(daemon)
    assert content_type.startswith("text/plain; version=0.0.4")
    _, types = parse(text)
    expected = {
        "evidenceos_rpc_requests": "counter",
        "evidenceos_rpc_duration_seconds": "histogram",
        "evidenceos_store_commit_group_size": "histogram",
        "evidenceos_store_commit_duration_seconds": "histogram",
        "evidenceos_log_tree_size": "gauge",
        "evidenceos_log_signed_tree_heads": "gauge",
        "evidenceos_database_bytes": "gauge",
        "evidenceos_claims": "gauge",
        "evidenceos_capsules": "gauge",
        "evidenceos_incidents": "counter",
        "evidenceos_credit_charged": "counter",
        "evidenceos_credit_denied": "counter",
        "evidenceos_config_reloads": "counter",
        "evidenceos_sandbox_guest_fuel": "histogram",
        "evidenceos_sandbox_padding_fuel": "counter",
        "evidenceos_sandbox_compiles": "counter",
        "evidenceos_sandbox_artefact_loads": "counter",
        "evidenceos_sandbox_compile_cache_hits": "counter",
        "evidenceos_sandbox_cached_modules": "gauge",
        "evidenceos_build_info": "gauge",
        "process_resident_memory_bytes": "gauge",
    }
    assert {name: types.get(name) for name in expected} == expected
    assert "_created" not in text


def test_rpc_counts_and_latency_by_method_and_status(exercised: tuple[DaemonProcess, Path]) -> None:
    daemon, _ = exercised
    samples, _ = parse(scrape(daemon)[1])
    requests = "evidenceos_rpc_requests_total"
    assert value(samples, requests, method=V2 + "ExecuteClaimV2", code="OK") == 1
    failed = {
        dict(labels)["code"]: v
        for (name, labels), v in samples.items()
        if name == requests and dict(labels)["method"] == V2 + "ExecuteClaimV2"
    }
    assert sum(failed.values()) == 2 and len(failed) == 2  # OK and the incident's status
    assert value(samples, requests, method=V2 + "GetCapsule", code="INVALID_ARGUMENT") == 1
    assert value(samples, requests, method=V2 + "CreateClaimV2", code="OK") == 2
    watch = V2 + "WatchRevocations"
    deadline = time.monotonic() + 10
    while (requests, frozenset({"method": watch, "code": "CANCELLED"}.items())) not in samples:
        assert time.monotonic() < deadline, "cancelled stream not counted"
        time.sleep(0.05)
        samples, _ = parse(scrape(daemon)[1])
    count = value(
        samples, "evidenceos_rpc_duration_seconds_count", method=V2 + "ExecuteClaimV2", code="OK"
    )
    total = value(
        samples, "evidenceos_rpc_duration_seconds_sum", method=V2 + "ExecuteClaimV2", code="OK"
    )
    assert count == 1 and 0 < total < 30
    inf = value(
        samples,
        "evidenceos_rpc_duration_seconds_bucket",
        method=V2 + "ExecuteClaimV2",
        code="OK",
        le="+Inf",
    )
    assert inf == 1


def test_store_sandbox_credit_and_reload_series(exercised: tuple[DaemonProcess, Path]) -> None:
    daemon, data_dir = exercised
    samples, _ = parse(scrape(daemon)[1])
    head = daemon.v2.GetSignedTreeHead(pb.GetSignedTreeHeadRequest())
    assert value(samples, "evidenceos_log_tree_size") == head.tree_size == 2  # capsule+incident
    assert value(samples, "evidenceos_database_bytes") > 0
    by_state = dict(query(data_dir, "SELECT state, count(*) FROM claims GROUP BY state"))
    for state in ("CERTIFIED", "REVOKED", "FROZEN", "SEALED", "SETTLED"):
        assert value(samples, "evidenceos_claims", state=state) == by_state.get(state, 0), state
    assert value(samples, "evidenceos_incidents_total") == 1
    ((burned,),) = query(data_dir, "SELECT sum(burned_total) FROM accounts")
    assert value(samples, "evidenceos_credit_charged_total") == burned > 0
    groups = value(samples, "evidenceos_store_commit_group_size_count")
    assert groups >= 8  # creates, commits, freezes, seals, executions
    assert value(samples, "evidenceos_store_commit_group_size_sum") >= groups
    assert value(samples, "evidenceos_store_commit_duration_seconds_count") == groups
    assert value(samples, "evidenceos_config_reloads_total", outcome="ok") == 1
    assert value(samples, "evidenceos_config_reloads_total", outcome="rejected") == 0
    assert value(samples, "evidenceos_sandbox_guest_fuel_count", outcome="ok") == 1
    assert value(samples, "evidenceos_sandbox_guest_fuel_count", outcome="failed") == 1
    assert value(samples, "evidenceos_sandbox_guest_fuel_sum", outcome="ok") > 0
    assert value(samples, "evidenceos_sandbox_padding_fuel_total") > 0
    assert value(samples, "evidenceos_sandbox_compiles_total") == 2  # two distinct modules
    assert value(samples, "evidenceos_sandbox_compile_cache_hits_total") >= 2  # executions


def test_metrics_listen_defaults_to_loopback() -> None:
    assert DEFAULT_METRICS_LISTEN.startswith("127.0.0.1:")


def test_metrics_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exited = run_to_exit(
            tmp_path / "data", extra_args=["--metrics-listen", f"127.0.0.1:{port}"]
        )
    assert exited.returncode == 1
    assert "cannot listen on --metrics-listen" in exited.stderr
