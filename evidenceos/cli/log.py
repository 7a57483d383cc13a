"""``evidenceosctl log head|watch``: signed tree heads from a running daemon, verified here.

``watch`` is the monitor an auditor runs: it polls the daemon's signed tree head, checks each
head's signature against the trusted key, and proves that every new head extends the last one it
saw. The proof is RFC 6962 ``PROOF(m, n)``, rebuilt from the audit path of leaf ``m - 1`` in the
new tree (``GetConsistencyProof`` returns no path, see :mod:`evidenceos.client.verify`), so the
daemon is trusted for nothing. ``--state FILE`` keeps the last verified head across runs, so a
log rewritten while the monitor was down is caught at the next start.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from evidenceos.cli._common import emit_json, json_option
from evidenceos.cli._connect import connection_options
from evidenceos.cli.verify import public_key_options, read_public_keys, rpc_errors

if TYPE_CHECKING:  # the client (grpc, protobuf) loads only when a command runs
    from evidenceos.client import Client, SignedTreeHead

__all__ = ["log"]


@click.group("log", context_settings={"help_option_names": ["-h", "--help"]})
def log() -> None:
    """Signed tree heads of a running daemon, verified on this side."""


@log.command("head")
@public_key_options
@connection_options
@json_option
def log_head(
    public_keys: tuple[str, ...],
    public_key_files: tuple[Path, ...],
    client_factory: Callable[[], Client],
    as_json: bool,
) -> None:
    """Print the daemon's current signed tree head after checking its signature.

    Exits 3 if the signature does not verify against the trusted (or, without --public-key,
    the daemon's own) key.
    """
    from evidenceos.client.monitor import TrustedKeys, head_to_json

    trusted = read_public_keys(public_keys, public_key_files)
    client: Client | None = None
    with rpc_errors(lambda: client.target if client else "?"):
        client = client_factory()
        with client:
            head = client.signed_tree_head()
            TrustedKeys(client, trusted).verify(head)
    doc = {**head_to_json(head), "key_pinned": bool(trusted)}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"size {head.tree_size}  root {doc['root_hash']}  key {doc['key_id']}")


@log.command("watch")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Stop after this many new verified heads (0: run until interrupted).",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Remember the last verified head here; the next run must extend it.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Check the current head against --state (or just its signature) once, print it, exit.",
)
@public_key_options
@connection_options
@json_option
def log_watch(
    interval: float,
    count: int,
    state_file: Path | None,
    once: bool,
    public_keys: tuple[str, ...],
    public_key_files: tuple[Path, ...],
    client_factory: Callable[[], Client],
    as_json: bool,
) -> None:
    """Follow the daemon's signed tree heads; prove each new one extends the last one seen.

    Prints one line per new head (a JSON object per line with --json). Exits 3 at the first head
    whose signature fails or that does not extend the previous head (a rewritten or forked
    log). With --once (for cron): one check, one line, exit 0 when the head extends the saved
    one. Needs the auditor role (GetInclusionProof) on a daemon with authentication.
    """
    from evidenceos.client.monitor import TrustedKeys, load_head, prove_extension, save_head

    trusted = read_public_keys(public_keys, public_key_files)
    try:
        last = load_head(state_file) if state_file is not None else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    shown = 0
    client: Client | None = None
    with rpc_errors(lambda: client.target if client else "?"):
        client = client_factory()
        with client:
            keys = TrustedKeys(client, trusted)
            if last is not None:
                keys.verify(last)
            while True:
                head = client.signed_tree_head()
                keys.verify(head)
                proven = head if last is None else prove_extension(client, keys, last, head)
                if proven is None and once:
                    raise click.ClickException("the log kept growing during the check; rerun")
                if proven is not None and (
                    once
                    or last is None
                    or (proven.tree_size, proven.root_hash) != (last.tree_size, last.root_hash)
                ):
                    _report(proven, last, as_json)
                    last = proven
                    shown += 1
                    if state_file is not None:
                        save_head(state_file, proven)
                if once or (count and shown >= count):
                    return
                time.sleep(interval)


def _report(head: SignedTreeHead, previous: SignedTreeHead | None, as_json: bool) -> None:
    from evidenceos.client.monitor import head_to_json

    if as_json:
        doc = {**head_to_json(head), "extends": None if previous is None else previous.tree_size}
        click.echo(json.dumps(doc, sort_keys=True))
    elif previous is None:
        click.echo(f"size {head.tree_size}  root {head.root_hash.hex()}  (first head seen)")
    elif (previous.tree_size, previous.root_hash) == (head.tree_size, head.root_hash):
        click.echo(f"size {head.tree_size}  root {head.root_hash.hex()}  unchanged: ok")
    else:
        click.echo(
            f"size {head.tree_size}  root {head.root_hash.hex()}  "
            f"extends size {previous.tree_size}: ok"
        )
    sys.stdout.flush()
