"""``evidenceosctl``: operator commands over a data directory (OPERATIONS.md, spec 50 §4).

Each command opens the store for ``--data-dir``, calls the same service code the daemon uses and
renders the result: a readable table for people, ``--json`` for machines (shapes in ``schema/``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from copy import copy as shallow_copy
from pathlib import Path

import click

from evidenceos.cli._common import (
    EXIT_VERIFY_FAILED,
    data_dir_option,
    domain_errors,
    emit_json,
    json_option,
)
from evidenceos.cli.canary import canary
from evidenceos.cli.epoch import epoch
from evidenceos.cli.governance import governance
from evidenceos.cli.holdout import holdout
from evidenceos.cli.log import log as log_group
from evidenceos.cli.nullspec import nullspec
from evidenceos.cli.oracle import oracle
from evidenceos.cli.verify import verify as verify_group
from evidenceos.errors import FailedPrecondition
from evidenceos.service.log_service import LogService
from evidenceos.store.db import DB_FILENAME, Store
from evidenceos.store.export import Exporter
from evidenceos.store.keys import load_keyring, rotate_key


def require_data_dir(data_dir: Path) -> None:
    """Refuse to act on (and silently create) a data dir the daemon never initialised."""
    if not (data_dir / DB_FILENAME).exists():
        raise FailedPrecondition(
            f"{data_dir / DB_FILENAME} does not exist; start evidenceosd with "
            f"--data-dir {data_dir} once, or check the path"
        )


@contextmanager
def open_store(data_dir: Path) -> Iterator[Store]:
    require_data_dir(data_dir)
    store = Store(data_dir)
    try:
        yield store
    finally:
        store.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate EvidenceOS: keys, log verification, exports, backups, holdouts, governance
    (NullSpecs, oracles, epochs, canaries) and verification of a running daemon."""


@main.group()
def keys() -> None:
    """ETL signing keys under <data-dir>/keys/."""


@keys.command("rotate")
@data_dir_option
@json_option
@domain_errors
def keys_rotate(data_dir: Path, as_json: bool) -> None:
    """Generate a new ETL signing key and make it active.

    Old keys stay in keys/ so heads they signed keep verifying (GetPublicKey by key id).
    Restart the daemon to start signing with the new key.
    """
    require_data_dir(data_dir)
    key_id = rotate_key(data_dir)
    if as_json:
        emit_json({"active_key_id": key_id.hex()})
    else:
        click.echo(f"new active key id: {key_id.hex()}")
        click.echo("restart evidenceosd to sign new tree heads with it")


@keys.command("list")
@data_dir_option
@json_option
@domain_errors
def keys_list(data_dir: Path, as_json: bool) -> None:
    """List the ETL signing keys (key id, public key, which is active)."""
    require_data_dir(data_dir)
    ring = load_keyring(data_dir, allow_generate=False)
    rows = [
        {
            "key_id": key_id.hex(),
            "public_key": public.hex(),
            "active": key_id == ring.active_key_id,
        }
        for key_id, public in sorted(ring.public_keys.items())
    ]
    if as_json:
        emit_json({"keys": rows})
        return
    for row in rows:
        marker = "*" if row["active"] else " "
        click.echo(f"{marker} {row['key_id']}  {row['public_key']}")


@main.group()
def etl() -> None:
    """The Evidence Transparency Log."""


@etl.command("verify")
@data_dir_option
@json_option
@domain_errors
def etl_verify(data_dir: Path, as_json: bool) -> None:
    """Re-hash every leaf and node and check every stored signed tree head.

    Exits 3 and names the first bad leaf when the log is damaged.
    """
    with open_store(data_dir) as store:
        service = LogService(store, None)
        bar = click.progressbar(
            length=service.tree_size(), label="verifying leaves", file=sys.stderr, show_pos=True
        )
        with bar:
            report = service.verify_full(progress=bar.update)
    doc = {
        "ok": report.ok,
        "tree_size": report.tree_size,
        "nodes_checked": report.nodes_checked,
        "heads_checked": report.heads_checked,
        "problems": report.problems,
    }
    if as_json:
        emit_json(doc)
    elif report.ok:
        click.echo(
            f"ok: {report.tree_size} leaves, {report.nodes_checked} nodes, "
            f"{report.heads_checked} signed tree heads verified"
        )
    else:
        for problem in report.problems:
            click.echo(f"DAMAGED: {problem}")
    if not report.ok:
        sys.exit(EXIT_VERIFY_FAILED)


@main.command("export")
@data_dir_option
@json_option
@domain_errors
def export(data_dir: Path, as_json: bool) -> None:
    """Write the exported views (etl.log, state.json, ...) from the database, atomically."""
    with (
        open_store(data_dir) as store,
        click.progressbar(length=1, label="exporting", file=sys.stderr) as bar,
    ):
        paths = Exporter(store, data_dir).export_all(full_check=True)
        bar.update(1)
    if as_json:
        emit_json({"written": [str(p) for p in paths]})
    else:
        for path in paths:
            click.echo(f"wrote {path}")


@main.command("backup")
@data_dir_option
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to create (must not exist).",
)
@json_option
@domain_errors
def backup(data_dir: Path, target: Path, as_json: bool) -> None:
    """Copy the live database with SQLite's online backup API, then verify the copy."""
    if target.exists():
        raise FailedPrecondition(f"{target} already exists; choose a new backup file")
    with (
        open_store(data_dir) as store,
        click.progressbar(length=100, label="backing up", file=sys.stderr) as bar,
    ):
        done = [0]

        def progress(copied: int, total: int) -> None:
            pct = copied * 100 // max(total, 1)
            bar.update(pct - done[0])
            done[0] = pct

        store.backup_to(target, progress)
    copy = Store.open_copy(target)
    try:
        report = LogService(copy, None).verify_full()
    finally:
        copy.close()
    doc = {
        "backup": str(target),
        "tree_size": report.tree_size,
        "verified": report.ok,
        "problems": report.problems,
    }
    if as_json:
        emit_json(doc)
    else:
        status = "verified" if report.ok else "FAILED VERIFICATION"
        click.echo(f"backup {target}: {report.tree_size} leaves, {status}")
    if not report.ok:
        sys.exit(EXIT_VERIFY_FAILED)


main.add_command(holdout)
main.add_command(verify_group)
main.add_command(log_group)
main.add_command(nullspec)
main.add_command(oracle)
main.add_command(governance)
main.add_command(epoch)
main.add_command(canary)


def _hidden(command: click.Command) -> click.Command:
    """The same command under a second, hidden name (the reference's aliases, spec 50 §4.0)."""
    alias = shallow_copy(command)
    alias.hidden = True
    return alias


main.add_command(_hidden(oracle), "operator")
main.add_command(_hidden(epoch), "operator-epoch")
oracle.add_command(_hidden(oracle.commands["set-ttl"]), "sign-oracle-record")
oracle.add_command(_hidden(oracle.commands["rotate-calibration"]), "sign-oracle-calibration")
epoch.add_command(_hidden(epoch.commands["advance"]), "sign-epoch-control")
