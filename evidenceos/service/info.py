"""What GetServerInfo reports (spec 20 §3.2); feature flags reflect the real configuration."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_SEMVER = "2.1.0"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    proto_hash: str
    daemon_version: str
    build_git_commit: str = "unknown"
    build_time_utc: str = "unknown"
    protocol_semver: str = PROTOCOL_SEMVER
    tls_enabled: bool = False
    mtls_enabled: bool = False
    oracle_registry_enabled: bool = False
    insecure_v1_enabled: bool = False
    synthetic_holdout_enabled: bool = False
    disjointness_attestation_required: bool = True
