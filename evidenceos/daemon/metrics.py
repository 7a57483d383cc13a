"""The daemon's Prometheus metrics (DESIGN §7; every series is listed in docs/metrics.md).

One :class:`Metrics` per daemon owns its own ``CollectorRegistry`` (never the process-global
one, so several daemons in one process — tests — do not collide). Three kinds of sources feed it:

* event counters updated where things happen: RPCs (the outermost server interceptor), group
  commits (a store commit listener), reloads, and fuel burnt in the sandbox
  (:class:`MeteredSandbox`);
* collectors evaluated at scrape time from the source of truth: log size, claims by state, credit
  charged, capsules, incidents (one read transaction on the store) and the sandbox's compile
  cache counters;
* process facts from ``prometheus_client`` (CPU, memory, file descriptors, GC).

The endpoint is ``prometheus_client``'s HTTP server on ``--metrics-listen`` (loopback by default).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from evidenceos import __version__
from evidenceos.core.claim_state import ClaimState
from evidenceos.errors import EvidenceOSError
from evidenceos.rpc.metrics_interceptor import MetricsInterceptor
from evidenceos.sandbox import (
    CompiledModule,
    ExecutionResult,
    OracleCallback,
    OutputValidator,
    Sandbox,
    VaultError,
    VaultLimits,
)
from evidenceos.store import stats as store_stats
from evidenceos.store.db import Store

log = logging.getLogger("evidenceos.daemon.metrics")

#: Group commit sizes are bounded by the store's MAX_GROUP (256).
GROUP_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
FUEL_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)

# ``_created`` series double the output and nothing here needs them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _StoreCollector(Collector):
    """Scrape-time aggregates from the database (one read snapshot per scrape)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterable[Metric]:
        try:
            stats = store_stats.collect(self._store)
        except EvidenceOSError as exc:  # closed or busy store: skip, never fail the scrape
            log.debug("store metrics unavailable: %s", exc)
            return
        size = GaugeMetricFamily(
            "evidenceos_log_tree_size", "Leaves in the transparency log (tree size)."
        )
        size.add_metric([], stats.tree_size)
        yield size
        heads = GaugeMetricFamily(
            "evidenceos_log_signed_tree_heads", "Signed tree heads stored (every head handed out)."
        )
        heads.add_metric([], stats.signed_heads)
        yield heads
        db_bytes = GaugeMetricFamily(
            "evidenceos_database_bytes", "Size of evidenceos.db plus its WAL, in bytes."
        )
        db_bytes.add_metric([], store_stats.database_bytes(self._store))
        yield db_bytes
        claims = GaugeMetricFamily(
            "evidenceos_claims",
            "Claims by lifecycle state (every state, zeros included).",
            labels=["state"],
        )
        for state in ClaimState:
            claims.add_metric([state.name], stats.claims_by_state.get(state.name, 0))
        yield claims
        capsules = GaugeMetricFamily(
            "evidenceos_capsules",
            "Capsules in the log, by whether they certified.",
            labels=["certified"],
        )
        capsules.add_metric(["true"], stats.certified_capsules)
        capsules.add_metric(["false"], stats.capsules - stats.certified_capsules)
        yield capsules
        incidents = CounterMetricFamily(
            "evidenceos_incidents", "Failed executions committed as incidents."
        )
        incidents.add_metric([], stats.incidents)
        yield incidents
        charged = CounterMetricFamily(
            "evidenceos_credit_charged",
            "Access credit charged (burned) across all principals; per principal: docs/audit.md.",
        )
        charged.add_metric([], stats.credit_charged)
        yield charged
        denied = CounterMetricFamily(
            "evidenceos_credit_denied", "Charges refused for insufficient credit (count)."
        )
        denied.add_metric([], stats.credit_denied)
        yield denied


class _SandboxCollector(Collector):
    """The compile cache of the one sandbox: compiles, artefact loads, hits, size."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def collect(self) -> Iterable[Metric]:
        stats = self._sandbox.stats
        for name, doc, value in (
            ("evidenceos_sandbox_compiles", "WASM modules compiled by wasmtime.", stats.compiles),
            (
                "evidenceos_sandbox_artefact_loads",
                "Modules rebuilt from a serialized artefact in the database (no compile).",
                stats.loads,
            ),
            (
                "evidenceos_sandbox_compile_cache_hits",
                "Executions that found their module already compiled in memory.",
                stats.cache_hits,
            ),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        cached = GaugeMetricFamily(
            "evidenceos_sandbox_cached_modules", "Compiled modules held in the in-memory cache."
        )
        cached.add_metric([], stats.cached_modules)
        yield cached


class Metrics:
    """Collectors of one daemon; wire with :meth:`watch_store`, :meth:`sandbox`,
    ``rpc_interceptor`` and :meth:`observe_commit`."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self.rpc_interceptor = MetricsInterceptor(self.registry)
        self.commit_group_size = Histogram(
            "evidenceos_store_commit_group_size",
            "Mutations committed together in one group-commit transaction.",
            buckets=GROUP_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "evidenceos_store_commit_duration_seconds",
            "Time from BEGIN to COMMIT of one group-commit transaction, in seconds.",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "evidenceos_config_reloads",
            "SIGHUP reloads by outcome: ok (config_reload) or rejected (config_reload_rejected).",
            ("outcome",),
            registry=self.registry,
        )
        for outcome in ("ok", "rejected"):
            self.reloads.labels(outcome)
        self.guest_fuel = Histogram(
            "evidenceos_sandbox_guest_fuel",
            "Fuel used by one guest execution, by outcome (ok, or failed: trap, fuel, memory).",
            ("outcome",),
            buckets=FUEL_BUCKETS,
            registry=self.registry,
        )
        for outcome in ("ok", "failed"):
            self.guest_fuel.labels(outcome)
        self.padding_fuel = Counter(
            "evidenceos_sandbox_padding_fuel",
            "Fuel burnt by PLN padding to normalise execution cost.",
            registry=self.registry,
        )
        build = Gauge(
            "evidenceos_build_info",
            "Always 1; the daemon version as a label.",
            ("version",),
            registry=self.registry,
        )
        build.labels(__version__).set(1)

    # -- wiring -------------------------------------------------------------------------------

    def observe_commit(self, group_size: int, seconds: float) -> None:
        """A :meth:`Store.add_commit_listener` listener."""
        self.commit_group_size.observe(group_size)
        self.commit_seconds.observe(seconds)

    def record_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "rejected").inc()

    def watch_store(self, store: Store) -> None:
        """Register the scrape-time collector over ``store`` and listen to its commits."""
        store.add_commit_listener(self.observe_commit)
        self.registry.register(_StoreCollector(store))

    def sandbox(self, **kwargs: Any) -> MeteredSandbox:
        """A sandbox that reports fuel here, with its compile cache registered."""
        sandbox = MeteredSandbox(self, **kwargs)
        self.registry.register(_SandboxCollector(sandbox))
        return sandbox

    def render(self) -> bytes:
        """The exposition text (what ``GET /metrics`` answers)."""
        return prometheus_client.generate_latest(self.registry)


class MeteredSandbox(Sandbox):
    """:class:`Sandbox` that reports the fuel of every guest run and every PLN burn."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def execute(
        self,
        module: CompiledModule,
        *,
        limits: VaultLimits,
        holdout_len: int,
        oracle: OracleCallback,
        validate_output: OutputValidator,
    ) -> ExecutionResult:
        try:
            result = super().execute(
                module,
                limits=limits,
                holdout_len=holdout_len,
                oracle=oracle,
                validate_output=validate_output,
            )
        except VaultError as exc:
            self._metrics.guest_fuel.labels("failed").observe(exc.fuel_used)
            raise
        self._metrics.guest_fuel.labels("ok").observe(result.fuel_used)
        return result

    def burn(self, padding_fuel: int) -> None:
        try:
            super().burn(padding_fuel)
        except VaultError as exc:
            self._metrics.padding_fuel.inc(exc.fuel_used)
            raise
        self._metrics.padding_fuel.inc(padding_fuel)
