"""What the governance commands share: the signing-key options, opening a data dir for
governance, rendering tables and mutation results (spec 50 §4, OPERATIONS "Key management")."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from evidenceos.cli._common import emit_json
from evidenceos.errors import FailedPrecondition, InvalidArgument
from evidenceos.service.governance import (
    GovernancePaths,
    GovernanceService,
    GovernanceSettings,
    MutationResult,
    Signer,
)
from evidenceos.service.log_service import LogService
from evidenceos.store.db import DB_FILENAME, Store
from evidenceos.store.keys import load_keyring
from evidenceos.store.lock import LOCK_FILE

F = TypeVar("F", bound=Callable[..., Any])

signing_key_option = click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the operator's raw 32-byte Ed25519 seed (not hex, not PEM).",
)
key_id_option = click.option(
    "--key-id",
    help="Operator key id: an entry of <data-dir>/trusted_oracle_keys.json (e.g. ops-k1).",
)
required_signing_key_option = click.option(
    "--signing-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the operator's raw 32-byte Ed25519 seed (not hex, not PEM).",
)
required_key_id_option = click.option(
    "--key-id",
    required=True,
    help="Operator key id: an entry of <data-dir>/trusted_oracle_keys.json (e.g. ops-k1).",
)
authority_keys_dir_option = click.option(
    "--nullspec-authority-keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="NullSpec authority public keys (default <data-dir>/trusted-nullspec-keys).",
)


def read_input_file(path: Path, what: str) -> bytes:
    """Read a file named on the command line; a missing one is an actionable error."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FailedPrecondition(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise FailedPrecondition(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {what} {path}: {exc.strerror}") from None


def load_signer(signing_key: Path | None, key_id: str | None) -> Signer | None:
    """``--signing-key`` + ``--key-id`` → a :class:`Signer`; both or neither."""
    if signing_key is None and key_id is None:
        return None
    if signing_key is None or key_id is None:
        raise click.UsageError("--signing-key and --key-id must be given together")
    seed = read_input_file(signing_key, "signing key file")
    if len(seed) != 32:
        hint = " (it looks like hex: decode it to raw bytes)" if len(seed) in (64, 65) else ""
        raise InvalidArgument(
            f"signing key must be raw 32-byte seed: {signing_key} holds {len(seed)} bytes{hint}"
        )
    return Signer.from_seed(key_id, seed)


def require_signer(signing_key: Path, key_id: str) -> Signer:
    signer = load_signer(signing_key, key_id)
    assert signer is not None  # noqa: S101 - both options are required
    return signer


@contextlib.contextmanager
def governance_session(
    data_dir: Path,
    *,
    writable: bool,
    nullspec_registry_dir: Path | None = None,
    nullspec_authority_keys_dir: Path | None = None,
) -> Iterator[GovernanceService]:
    """Open ``data_dir`` for governance. Writers sign tree heads with the data dir's ETL key
    (a leaf without a head would make the daemon refuse to start), so they need ``keys/``."""
    if not (data_dir / DB_FILENAME).exists():
        raise FailedPrecondition(
            f"{data_dir / DB_FILENAME} does not exist; start evidenceosd with "
            f"--data-dir {data_dir} once, or check the path"
        )
    keyring = load_keyring(data_dir, allow_generate=False) if writable else None
    store = Store(data_dir)
    try:
        service = GovernanceService(
            store,
            LogService(store, keyring),
            GovernancePaths.for_data_dir(
                data_dir,
                nullspec_registry_dir=nullspec_registry_dir,
                nullspec_authority_keys_dir=nullspec_authority_keys_dir,
            ),
            GovernanceSettings.from_env(os.environ),
        )
        yield service
    finally:
        store.close()


def daemon_pid(data_dir: Path) -> int | None:
    """The pid written into ``kernel.lock`` by a running daemon, if that process exists."""
    try:
        pid = int((data_dir / LOCK_FILE).read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def reload_hint(data_dir: Path) -> str:
    pid = daemon_pid(data_dir)
    if pid is None:
        return "evidenceosd applies it at its next start (or SIGHUP)"
    return f"send SIGHUP to apply it: kill -HUP {pid}"


def format_unix(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table; an empty one prints ``(none)``."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def emit_mutation(
    result: MutationResult, as_json: bool, summary: str, data_dir: Path | None = None
) -> None:
    """Print what a governance change did: the event, and whether it still awaits a reload."""
    doc = result.to_json()
    if data_dir is not None and result.status == "staged":
        doc["next_step"] = reload_hint(data_dir)
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{result.status}: {summary}")
    event = result.event
    signer = event.event.key_id or "unsigned"
    click.echo(
        f"  governance event #{event.seq} {event.event.event_type} "
        f"event_id {event.event.event_id} (log leaf {event.leaf_index}, key {signer})"
    )
    for warning in result.warnings:
        click.echo(f"  warning: {warning}")
    if "next_step" in doc:
        click.echo(f"  not in effect yet: {doc['next_step']}")
