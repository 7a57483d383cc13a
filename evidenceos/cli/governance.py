"""``evidenceosctl governance events list|show`` and ``governance verify`` (spec 50 §4.10;
DESIGN §1, §6).

Every signed change is a hash-chained governance event with a leaf in the transparency log;
``show`` prints an event with its inclusion proof against the latest signed tree head, and
``verify`` checks the whole chain against the log.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from evidenceos.cli._common import (
    EXIT_VERIFY_FAILED,
    data_dir_option,
    domain_errors,
    emit_json,
    json_option,
)
from evidenceos.cli._governance_common import echo_table, format_unix, governance_session
from evidenceos.core import merkle
from evidenceos.core.governance import verify_governance_event
from evidenceos.errors import EvidenceOSError

__all__ = ["governance"]


@click.group("governance", context_settings={"help_option_names": ["-h", "--help"]})
def governance() -> None:
    """The governance event chain (every signed operator change, logged in the ETL)."""


@governance.group("events")
def events() -> None:
    """List and show governance events."""


@events.command("list")
@data_dir_option
@json_option
@domain_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List every governance event in chain order."""
    with governance_session(data_dir, writable=False) as service:
        stored = service.events()
    if as_json:
        emit_json({"events": [e.to_json() for e in stored]})
        return
    echo_table(
        ["SEQ", "TIME", "EVENT_TYPE", "KEY_ID", "EVENT_ID", "LEAF"],
        [
            [
                e.seq,
                format_unix(e.event.epoch),
                e.event.event_type,
                e.event.key_id or "(unsigned)",
                e.event.event_id[:16],
                e.leaf_index,
            ]
            for e in stored
        ],
    )


@events.command("show")
@data_dir_option
@click.option("--event-id", required=True, help="Event id (64 hex characters).")
@json_option
@domain_errors
def show(data_dir: Path, event_id: str, as_json: bool) -> None:
    """Show an event, its signature status and its log inclusion proof."""
    with governance_session(data_dir, writable=False) as service:
        stored, occurrences, proof = service.event_with_proof(event_id.lower())
        trusted = service.trusted_keys()
    event = stored.event
    if not event.is_signed:
        signature = "unsigned"
    else:
        try:
            verify_governance_event(event, trusted)
            signature = "valid"
        except EvidenceOSError as exc:
            signature = f"not verified: {exc.message}"
    try:
        merkle.verify_inclusion(
            proof.leaf_hash, proof.leaf_index, proof.tree_size, proof.audit_path, proof.root_hash
        )
        proof_ok = True
    except EvidenceOSError:
        proof_ok = False
    doc: dict[str, Any] = {
        "event": stored.to_json(),
        "occurrences": occurrences,
        "signature": signature,
        "inclusion_proof": {
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "leaf_hash": proof.leaf_hash.hex(),
            "audit_path": [h.hex() for h in proof.audit_path],
            "root_hash": proof.root_hash.hex(),
            "verified": proof_ok,
        },
    }
    if as_json:
        emit_json(doc)
        return
    line = doc["event"]
    click.echo(f"governance event #{stored.seq} ({event.event_type})")
    for label, value in (
        ("event_id", line["event_id"]),
        ("time", f"{format_unix(event.epoch)} ({event.epoch})"),
        ("key_id", event.key_id or "(unsigned)"),
        ("signature", signature),
        ("prev_event_hash", line["prev_event_hash"]),
        ("event_hash", line["event_hash"]),
    ):
        click.echo(f"  {label + ':':18} {value}")
    click.echo("  payload:")
    for key in sorted(event.payload):
        click.echo(f"    {key}: {event.payload[key]}")
    if occurrences > 1:
        click.echo(f"  ({occurrences} events share this id; showing the first)")
    click.echo(
        f"inclusion proof: leaf {proof.leaf_index} in tree of size {proof.tree_size}, "
        f"root {proof.root_hash.hex()} ({'verified' if proof_ok else 'DOES NOT VERIFY'})"
    )
    click.echo(f"  leaf_hash: {proof.leaf_hash.hex()}")
    for index, node in enumerate(proof.audit_path):
        click.echo(f"  path[{index}]: {node.hex()}")


@governance.command("verify")
@data_dir_option
@json_option
@domain_errors
def verify(data_dir: Path, as_json: bool) -> None:
    """Check the chain: hashes, links, and that every event matches its log leaf.

    Exits 3 when an event was edited, inserted or deleted outside the tools.
    """
    with governance_session(data_dir, writable=False) as service:
        problems = service.chain_problems()
        count = len(service.events())
    if as_json:
        emit_json({"ok": not problems, "events": count, "problems": problems})
    elif problems:
        for problem in problems:
            click.echo(f"DAMAGED: {problem}")
    else:
        click.echo(f"ok: {count} governance events, chain intact and matching the log")
    if problems:
        sys.exit(EXIT_VERIFY_FAILED)
