"""``evidenceosd``: flags and environment → :class:`DaemonConfig` → ``daemon.run``.

Flag names and defaults follow spec 60 §1.2."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from evidenceos.config import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_METRICS_LISTEN,
    DaemonConfig,
    ListenAddress,
)
from evidenceos.daemon.logs import parse_level, setup_logging
from evidenceos.daemon.run import run
from evidenceos.errors import EvidenceOSError


def env_flag(name: str, default: bool = False) -> bool:
    """Spec 60 §1.3: set → true iff ``1`` or ``true`` (any case); unset → the default."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help="gRPC bind address, IP:port (v1 and v2 on one port).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./data"),
    show_default=True,
    help="Root of all persistent state: evidenceos.db, keys/, exported views.",
)
@click.option(
    "--etl-path",
    type=click.Path(path_type=Path),
    default=None,
    hidden=True,
    help="Deprecated: the data dir becomes this file's parent directory.",
)
@click.option(
    "--log",
    "log_directive",
    default="info",
    show_default=True,
    help="Log filter: a level (info, debug, warn, error) or target=level list.",
)
@click.option(
    "--durable-etl",
    is_flag=True,
    help="Accepted for compatibility: every commit is already durable.",
)
@click.option(
    "--metrics-listen",
    default=DEFAULT_METRICS_LISTEN,
    show_default=True,
    help="Prometheus metrics endpoint, IP:port.",
)
@click.option(
    "--max-request-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    help="Largest request message accepted on any RPC.",
)
@click.option(
    "--rpc-timeout-ms",
    type=click.IntRange(min=1),
    default=None,
    help="Accepted for compatibility; per-RPC server deadlines are not enforced yet.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM server certificate chain (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM server private key (with --tls-cert).",
)
@click.option(
    "--mtls-client-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM CA bundle that client certificates must chain to.",
)
@click.option(
    "--require-client-cert",
    is_flag=True,
    help="Require a client certificate signed by --mtls-client-ca.",
)
@click.option(
    "--auth-token",
    envvar="EVIDENCEOS_AUTH_TOKEN",
    default=None,
    help="Shared bearer token; every holder is an auditor. Prefer EVIDENCEOS_AUTH_TOKEN "
    "(keeps it out of ps).",
)
@click.option(
    "--agent-tokens",
    multiple=True,
    help="Comma-separated bearer tokens with the agent role (repeatable).",
)
@click.option(
    "--auditor-tokens",
    multiple=True,
    help="Comma-separated bearer tokens with the auditor role (repeatable).",
)
@click.option(
    "--auth-hmac-key",
    default=None,
    help="HMAC request-signing secret for key id 'default' (its UTF-8 bytes).",
)
@click.option(
    "--insecure-allow-plaintext",
    is_flag=True,
    help="Allow plaintext gRPC on a non-loopback address (not recommended).",
)
@click.option(
    "--nullspec-registry-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Signed NullSpec registry (default <data-dir>/nullspec-registry).",
)
@click.option(
    "--nullspec-authority-keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="NullSpec authority public keys (default <data-dir>/trusted-nullspec-keys).",
)
@click.option(
    "--allow-plaintext-holdouts",
    is_flag=True,
    help="Dev only: accept unencrypted holdouts/<ref>/labels.bin.",
)
@click.option(
    "--insecure-synthetic-holdout",
    is_flag=True,
    help="Dev only: serve generated synthetic-* holdouts instead of the registry.",
)
def main(
    listen: str,
    data_dir: Path,
    etl_path: Path | None,
    log_directive: str,
    durable_etl: bool,
    metrics_listen: str,
    max_request_bytes: int,
    rpc_timeout_ms: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    mtls_client_ca: Path | None,
    require_client_cert: bool,
    auth_token: str | None,
    agent_tokens: tuple[str, ...],
    auditor_tokens: tuple[str, ...],
    auth_hmac_key: str | None,
    insecure_allow_plaintext: bool,
    nullspec_registry_dir: Path | None,
    nullspec_authority_keys_dir: Path | None,
    allow_plaintext_holdouts: bool,
    insecure_synthetic_holdout: bool,
) -> None:
    """Run the EvidenceOS verification daemon."""
    try:
        parse_level(log_directive)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log") from None
    try:
        if etl_path is not None:
            data_dir = etl_path.parent if str(etl_path.parent) else Path(".")
        config = DaemonConfig(
            data_dir=data_dir,
            listen=ListenAddress.parse(listen, "--listen"),
            metrics_listen=ListenAddress.parse(metrics_listen, "--metrics-listen"),
            log_level=log_directive,
            durable_etl=durable_etl,
            max_request_bytes=max_request_bytes,
            rpc_timeout_ms=rpc_timeout_ms,
            tls_cert=tls_cert,
            tls_key=tls_key,
            mtls_client_ca=mtls_client_ca,
            require_client_cert=require_client_cert,
            auth_token=auth_token,
            auth_hmac_key=auth_hmac_key,
            agent_tokens=agent_tokens,
            auditor_tokens=auditor_tokens,
            insecure_allow_plaintext=insecure_allow_plaintext,
            production_mode=env_flag("EVIDENCEOS_PRODUCTION_MODE"),
            enable_insecure_v1=env_flag("EVIDENCEOS_ENABLE_INSECURE_V1"),
            nullspec_registry_dir=nullspec_registry_dir,
            nullspec_authority_keys_dir=nullspec_authority_keys_dir,
            allow_plaintext_holdouts=allow_plaintext_holdouts
            or env_flag("EVIDENCEOS_ALLOW_PLAINTEXT_HOLDOUTS"),
            insecure_synthetic_holdout=insecure_synthetic_holdout
            or env_flag("EVIDENCEOS_INSECURE_SYNTHETIC_HOLDOUT"),
            build_git_commit=os.environ.get("EVIDENCEOS_BUILD_GIT_COMMIT", "unknown"),
            build_time_utc=os.environ.get("EVIDENCEOS_BUILD_TIME_UTC", "unknown"),
        )
        config.validate()
        setup_logging(log_directive)
        sys.exit(run(config))
    except EvidenceOSError as exc:
        logging.getLogger("evidenceos.daemon").error(
            "refusing to start: %s", exc.message, extra={"event": "startup_refused"}
        )
        click.echo(f"evidenceosd: error: {exc.message}", err=True)
        sys.exit(1)
