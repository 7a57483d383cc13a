"""Daemon lifecycle for one configuration: check, recover, wire, serve, drain (DESIGN §3, §7).

Order matters: every flag is validated before any side effect; the data-dir lock is taken before
the database is opened; the log is verified before the port is bound, so a damaged log never
serves a single request.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import prometheus_client

from evidenceos import __version__
from evidenceos._proto import V2_PROTO_SHA256
from evidenceos.config import DaemonConfig
from evidenceos.core.credit import (
    CreditPricing,
    HoldoutPoolDefaults,
    StaticAdmissionProvider,
    parse_env_flag,
)
from evidenceos.core.probe import ProbeConfig
from evidenceos.daemon.metrics import Metrics
from evidenceos.errors import ConfigError, LogIntegrityError
from evidenceos.rpc.auth_interceptor import (
    AuthInterceptor,
    build_request_guard,
    describe_auth_mode,
)
from evidenceos.rpc.server import RunningServer, build_server
from evidenceos.rpc.services import Services
from evidenceos.service.claims import ClaimService, KernelSettings
from evidenceos.service.credit import CreditService
from evidenceos.service.execution import ExecutionService
from evidenceos.service.governance import GovernancePaths, GovernanceService, GovernanceSettings
from evidenceos.service.info import ServerInfo
from evidenceos.service.log_service import LogService
from evidenceos.service.probe import ProbeService
from evidenceos.service.revocation import RevocationService, WatchSettings
from evidenceos.store import log as log_table
from evidenceos.store.db import Store
from evidenceos.store.export import Exporter, ExportScheduler
from evidenceos.store.holdouts import HoldoutRegistry
from evidenceos.store.keys import load_keyring
from evidenceos.store.lock import DataDirLock

log = logging.getLogger("evidenceos.daemon")


@dataclass
class Daemon:
    """Everything one running daemon holds; built by :func:`start`, torn down by :meth:`stop`."""

    config: DaemonConfig
    lock: DataDirLock
    store: Store
    log_service: LogService
    exporter: Exporter
    scheduler: ExportScheduler
    server: RunningServer
    metrics_port: int | None
    metrics: Metrics | None = None
    revocations: RevocationService | None = None
    governance: GovernanceService | None = None

    def stop(self) -> None:
        """Drain in-flight calls, export the views, close the database, release the lock."""
        log.info("stopping", extra={"event": "stopping"})
        self.server.set_serving(False)
        if self.revocations is not None:
            self.revocations.close()  # watchers end now instead of holding the grace period
        self.server.server.stop(self.config.grace_period_s).wait()
        self.scheduler.stop()
        try:
            self.log_service.close()  # sign the whole tree: a clean stop leaves no unsigned tail
        except Exception:
            log.exception("could not sign the final tree head; the next start re-checks the tail")
        try:
            self.exporter.export_all()
        except Exception:  # exports are views; never block shutdown on them
            log.exception("final export failed")
        self.store.close()
        self.lock.release()
        log.info("stopped", extra={"event": "stopped"})

    def reload(self) -> None:
        """SIGHUP: re-read governance inputs and staged records, validate and apply them
        atomically (or keep the old configuration and log why), then re-export the views."""
        ok = True
        if self.governance is not None:
            ok = self.governance.reload("sighup").ok
        self.scheduler.request(full=True)  # etl.log too, whatever its refresh interval
        if self.metrics is not None:
            self.metrics.record_reload(ok=ok)


def _is_fresh(store: Store) -> bool:
    with store.read() as conn:
        return not log_table.known_signing_keys(conn) and log_table.tree_size(conn) == 0


def _check_integrity(store: Store, log_service: LogService) -> None:
    if not store.schema_cookie_matches():
        log.warning(
            "database schema changed outside evidenceosd; re-hashing the whole log",
            extra={"event": "full_verify"},
        )
        report = log_service.verify_full()
        if not report.ok:
            raise LogIntegrityError(
                "log damaged: " + report.problems[0] + f" ({len(report.problems)} problem(s); "
                "run `evidenceosctl etl verify` for the full list)"
            )
        store.record_schema_cookie()
    log_service.verify_on_start()


def _refuse_reference_intents(data_dir: Path) -> None:
    for name in ("pending_mutation.json", "pending_mutations"):
        if (data_dir / name).exists():
            raise LogIntegrityError(
                f"{data_dir / name} is a pending-mutation record from a reference (Rust) data "
                "dir; EvidenceOS for Python never writes or replays these. Move the reference "
                "data dir aside and start on a fresh --data-dir"
            )


def kernel_settings(config: DaemonConfig, env: Mapping[str, str]) -> KernelSettings:
    """Kernel knobs from the environment (spec 60 §1.3 D, E; spec 20 §8.4)."""
    pools = HoldoutPoolDefaults.from_env(env)
    heavy = env.get("EVIDENCEOS_FORCE_HEAVY_LANE_ON_DOMAIN", "CBRN")
    return KernelSettings(
        production_mode=config.production_mode,
        default_holdout_k_bits_budget=pools.k_bits_budget,
        default_holdout_access_credit_budget=pools.access_credit_budget,
        holdout_pool_scope=pools.scope.value,
        force_heavy_domains=frozenset(d.strip().upper() for d in heavy.split(",") if d.strip()),
        deny_free_text_outputs=parse_env_flag(
            env, "EVIDENCEOS_DENY_FREE_TEXT_OUTPUTS", default=config.production_mode
        ),
        pricing=CreditPricing.from_env(env),
        admission=StaticAdmissionProvider.from_env(env),
    )


GIL_SWITCH_INTERVAL_S = 0.001


def start(config: DaemonConfig) -> Daemon:
    config.validate()
    # A thread that wants the GIL waits at most this long for one that keeps running Python
    # (a background export of a big state.json, a guest run): 1 ms instead of CPython's 5 ms
    # keeps those from adding tens of ms to requests in flight (decision D-O6).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    guard = build_request_guard(config, os.environ)  # auth refusals before any side effect
    probe_config = ProbeConfig.from_env(os.environ)
    lock = DataDirLock(config.data_dir)
    store: Store | None = None
    try:
        _refuse_reference_intents(config.data_dir)
        store = Store(config.data_dir)
        metrics = Metrics()
        metrics.watch_store(store)
        keyring = load_keyring(config.data_dir, allow_generate=_is_fresh(store))
        log_service = LogService(store, keyring)
        _check_integrity(store, log_service)
        head = log_service.start()
        governance = GovernanceService(
            store,
            log_service,
            GovernancePaths.for_data_dir(
                config.data_dir,
                nullspec_registry_dir=config.nullspec_registry_dir,
                nullspec_authority_keys_dir=config.nullspec_authority_keys_dir,
            ),
            GovernanceSettings.from_env(os.environ, production_mode=config.production_mode),
        )
        governance.start()  # an invalid governance configuration refuses to start, saying why
        exporter = Exporter(store, config.data_dir, sign_head=log_service.signed_tree_head)
        scheduler = ExportScheduler(exporter, config.export_delay_s)
        store.add_commit_listener(lambda _size, _secs: scheduler.request())
        info = ServerInfo(
            proto_hash=V2_PROTO_SHA256,
            daemon_version=__version__,
            build_git_commit=config.build_git_commit,
            build_time_utc=config.build_time_utc,
            tls_enabled=config.tls_enabled,
            mtls_enabled=config.require_client_cert,
            insecure_v1_enabled=config.enable_insecure_v1,
            synthetic_holdout_enabled=config.insecure_synthetic_holdout,
        )
        settings = kernel_settings(config, os.environ)
        holdouts = HoldoutRegistry(
            config.data_dir,
            allow_plaintext=config.allow_plaintext_holdouts,
            synthetic=config.insecure_synthetic_holdout,
            env=os.environ,
        )
        claims = ClaimService(
            store, log_service, metrics.sandbox(), holdouts, settings, governance=governance
        )
        execution = ExecutionService(claims, governance=governance)
        credit = CreditService(store, log_service, settings.admission)
        auth = AuthInterceptor(
            guard,
            trust_peer_certificates=config.require_client_cert,
            probe=ProbeService(store, log_service, probe_config),
        )
        revocations = RevocationService(claims, keyring, WatchSettings.from_env(os.environ))
        server = build_server(
            config,
            Services(log_service, info, claims, execution, revocations=revocations, credit=credit),
            auth_interceptor=auth,
            metrics_interceptor=metrics.rpc_interceptor,
        )
        metrics_port = None
        if config.metrics_listen is not None:
            try:
                metrics_server, _ = prometheus_client.start_http_server(
                    config.metrics_listen.port,
                    config.metrics_listen.host,
                    registry=metrics.registry,
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on --metrics-listen {config.metrics_listen}: {exc}"
                ) from exc
            metrics_port = int(metrics_server.server_port)
        server.server.start()
        server.set_serving(True)
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise
    scheduler.request()
    log.info(
        "serving",
        extra={
            "event": "serving",
            "listen": f"{config.listen.host}:{server.port}",
            "metrics_port": metrics_port,
            "data_dir": str(config.data_dir),
            "tree_size": head.tree_size,
            "key_id": keyring.active_key_id.hex(),
            "auth": describe_auth_mode(guard, mtls=config.require_client_cert),
        },
    )
    _notify_systemd(b"READY=1")
    return Daemon(
        config,
        lock,
        store,
        log_service,
        exporter,
        scheduler,
        server,
        metrics_port,
        metrics,
        revocations=revocations,
        governance=governance,
    )


def _notify_systemd(message: bytes) -> None:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (Type=notify units)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.send(message)


def run(config: DaemonConfig) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code."""
    daemon = start(config)
    stop = threading.Event()
    hup = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        hup.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    while not stop.is_set():
        stop.wait(0.2)
        if hup.is_set():
            hup.clear()
            daemon.reload()
    _notify_systemd(b"STOPPING=1")
    daemon.stop()
    return 0
