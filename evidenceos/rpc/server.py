"""Assembly of the gRPC server: both API versions, health checking, reflection, limits, TLS."""

from __future__ import annotations

import os
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb2
from evidenceos._proto.v1 import evidenceos_pb2_grpc as v1_pb2_grpc
from evidenceos._proto.v2 import evidenceos_pb2 as v2_pb2
from evidenceos._proto.v2 import evidenceos_pb2_grpc as v2_pb2_grpc
from evidenceos.config import DaemonConfig
from evidenceos.errors import ConfigError
from evidenceos.rpc.auth_interceptor import AuthInterceptor, build_request_guard
from evidenceos.rpc.servicer import make_servicer
from evidenceos.rpc.services import Services

SERVICE_NAMES = (
    v2_pb2.DESCRIPTOR.services_by_name["EvidenceOS"].full_name,
    v1_pb2.DESCRIPTOR.services_by_name["EvidenceOS"].full_name,
)
MAX_WORKERS = 32


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)


def _credentials(config: DaemonConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        cert = config.tls_cert.read_bytes()
        key = config.tls_key.read_bytes()
        ca = config.mtls_client_ca.read_bytes() if config.mtls_client_ca else None
    except OSError as exc:
        raise ConfigError(f"cannot read TLS material: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=ca,
        require_client_auth=config.require_client_cert,
    )


def build_server(
    config: DaemonConfig,
    services: Services,
    *,
    metrics_interceptor: grpc.ServerInterceptor[Any, Any] | None = None,
    auth_interceptor: grpc.ServerInterceptor[Any, Any] | None = None,
) -> RunningServer:
    # Order matters: the first interceptor is the outermost. Metrics go first so they see the
    # final status of every call, refusals by the interceptors below included.
    interceptors: list[grpc.ServerInterceptor[Any, Any]] = []
    if metrics_interceptor is not None:
        interceptors.append(metrics_interceptor)
    # Always installed: servicers learn the caller only from it (rpc/identity.py).
    interceptors.append(
        auth_interceptor
        or AuthInterceptor(
            build_request_guard(config, os.environ),
            trust_peer_certificates=config.require_client_cert,
        )
    )
    options = [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        # Open WatchRevocations streams each hold a thread: reserve room for them so watchers
        # can never starve unary RPCs.
        futures.ThreadPoolExecutor(
            max_workers=MAX_WORKERS + services.revocations.hub.settings.max_watchers
            if services.revocations is not None
            else MAX_WORKERS,
            thread_name_prefix="rpc",
        ),
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=None,
    )
    for pb, pb_grpc in ((v2_pb2, v2_pb2_grpc), (v1_pb2, v1_pb2_grpc)):
        pb_grpc.add_EvidenceOSServicer_to_server(make_servicer(pb, pb_grpc, services), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = str(config.listen)
    credentials = _credentials(config)
    try:
        port = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (address in use?)")
    running = RunningServer(server=server, port=port, health=health_servicer)
    running.set_serving(False)
    return running
