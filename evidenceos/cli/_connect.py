"""Options shared by the commands that talk to a running daemon (through evidenceos.client)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from evidenceos.errors import InvalidArgument

if TYPE_CHECKING:  # grpc and protobuf load only when a command connects
    from evidenceos.client import BearerAuth, Client, HmacAuth

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option(
        "--endpoint",
        default="127.0.0.1:50051",
        show_default=True,
        envvar="EVIDENCEOS_ENDPOINT",
        help="Daemon gRPC address HOST:PORT (env EVIDENCEOS_ENDPOINT).",
    ),
    click.option(
        "--tls-ca",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Use TLS, trusting this CA for the server certificate (PEM).",
    ),
    click.option(
        "--tls-cert",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Client certificate for mTLS (PEM; needs --tls-key).",
    ),
    click.option(
        "--tls-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Client private key for mTLS (PEM).",
    ),
    click.option(
        "--tls-server-name", help="Expected server name when it differs from the endpoint host."
    ),
    click.option(
        "--auth-token-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="File holding a bearer token (env EVIDENCEOS_AUTH_TOKEN also works).",
    ),
    click.option(
        "--hmac-key-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="File holding an HMAC request-signing secret (raw bytes).",
    ),
    click.option(
        "--hmac-key-id", default="default", show_default=True, help="Key id for HMAC signing."
    ),
    click.option(
        "--timeout",
        type=float,
        default=30.0,
        show_default=True,
        help="Per-call deadline in seconds.",
    ),
)


def connection_options(fn: F) -> F:
    """Add the connection options; the command receives one ``client_factory`` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = {name: kwargs.pop(name) for name in _NAMES}
        kwargs["client_factory"] = functools.partial(make_client, **settings)
        return fn(*args, **kwargs)

    decorated: Any = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


_NAMES = (
    "endpoint",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_server_name",
    "auth_token_file",
    "hmac_key_file",
    "hmac_key_id",
    "timeout",
)


def make_client(
    *,
    endpoint: str,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_server_name: str | None,
    auth_token_file: Path | None,
    hmac_key_file: Path | None,
    hmac_key_id: str,
    timeout: float,
) -> Client:
    from evidenceos.client import BearerAuth, Client, HmacAuth, TlsOptions

    if (tls_cert is None) != (tls_key is None):
        raise InvalidArgument("--tls-cert and --tls-key go together")
    tls = None
    if tls_ca or tls_cert:
        tls = TlsOptions.from_files(tls_ca, tls_cert, tls_key, tls_server_name)
    token = os.environ.get("EVIDENCEOS_AUTH_TOKEN")
    if auth_token_file is not None:
        token = auth_token_file.read_text(encoding="utf-8").strip()
    if token and hmac_key_file is not None:
        raise InvalidArgument("give a bearer token or an HMAC key, not both")
    auth: BearerAuth | HmacAuth | None = None
    if token:
        auth = BearerAuth(token)
    elif hmac_key_file is not None:
        auth = HmacAuth(hmac_key_file.read_bytes().strip(), key_id=hmac_key_id)
    return Client(endpoint, tls=tls, auth=auth, timeout=timeout)
