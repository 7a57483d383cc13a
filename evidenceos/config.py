"""Settings as frozen values. Parsing argv and the environment happens in ``cli``; validation of
combinations happens in :func:`DaemonConfig.validate` before any side effect (spec 60 §1.1)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from evidenceos.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, flag: str) -> ListenAddress:
        """``IP:port`` with an IP literal (``[::1]:50051`` for IPv6); host names are refused."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError(f"{flag} must be IP:port, e.g. 127.0.0.1:50051 (got {text!r})")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                f"{flag} must use an IP literal, not a host name (got {text!r})"
            ) from None
        port = int(port_text)
        if port > 65535:
            raise ConfigError(f"{flag} port out of range (got {port})")
        return cls(host, port)

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    data_dir: Path = Path("./data")
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 50051))
    metrics_listen: ListenAddress | None = field(
        default_factory=lambda: ListenAddress("127.0.0.1", 9464)
    )
    log_level: str = "info"
    durable_etl: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    rpc_timeout_ms: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    mtls_client_ca: Path | None = None
    require_client_cert: bool = False
    # Credentials: never in repr, so a logged config cannot leak them (spec 60 §7.1).
    auth_token: str | None = field(default=None, repr=False)
    auth_hmac_key: str | None = field(default=None, repr=False)
    agent_tokens: tuple[str, ...] = field(default=(), repr=False)
    auditor_tokens: tuple[str, ...] = field(default=(), repr=False)
    insecure_allow_plaintext: bool = False
    production_mode: bool = False
    enable_insecure_v1: bool = False
    nullspec_registry_dir: Path | None = None
    nullspec_authority_keys_dir: Path | None = None
    allow_plaintext_holdouts: bool = False
    insecure_synthetic_holdout: bool = False
    build_git_commit: str = "unknown"
    build_time_utc: str = "unknown"
    grace_period_s: float = 10.0
    export_delay_s: float = 0.2

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    def validate(self) -> None:
        """Refuse unsafe or contradictory settings before anything touches the disk."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        if self.require_client_cert and not self.tls_enabled:
            raise ConfigError(
                "--require-client-cert needs TLS material: give --tls-cert and --tls-key"
            )
        if self.require_client_cert and self.mtls_client_ca is None:
            raise ConfigError("--require-client-cert needs --mtls-client-ca")
        if (
            not self.tls_enabled
            and not self.listen.is_loopback
            and not (self.insecure_allow_plaintext)
        ):
            raise ConfigError(
                f"refusing plaintext gRPC on non-loopback address {self.listen}; give "
                "--tls-cert/--tls-key, or --insecure-allow-plaintext if you really mean it"
            )
        if self.max_request_bytes <= 0:
            raise ConfigError("--max-request-bytes must be > 0")
        if self.production_mode and self.enable_insecure_v1:
            raise ConfigError(
                "EVIDENCEOS_ENABLE_INSECURE_V1 is forbidden when EVIDENCEOS_PRODUCTION_MODE is on"
            )
        if self.production_mode and self.insecure_synthetic_holdout:
            raise ConfigError("--insecure-synthetic-holdout is forbidden in production mode")
        if self.production_mode and self.allow_plaintext_holdouts:
            raise ConfigError("--allow-plaintext-holdouts is forbidden in production mode")
