"""``evidenceosctl canary status|reset`` (spec 50 §3.8, §4.11; DESIGN §5, §6, §9).

A canary stream is keyed by ``(oracle_id, holdout)``; ``--claim-name`` is accepted as the
guide's name for the first part. ``reset`` needs a signed ``canary_reset`` governance event
document (``evidenceos-operator sign-canary-reset`` writes one) whose signature verifies
against ``trusted_oracle_keys.json``; anything else is refused with the reason. A reset takes
effect at once and is logged as a chained governance event.
"""

from __future__ import annotations

from pathlib import Path

import click

from evidenceos.cli._common import data_dir_option, domain_errors, emit_json, json_option
from evidenceos.cli._governance_common import (
    emit_mutation,
    governance_session,
    read_input_file,
)
from evidenceos.errors import NotFound
from evidenceos.store import canary as canary_table

__all__ = ["canary"]

_stream_options = [
    click.option(
        "--oracle-id",
        "--claim-name",
        "oracle_id",
        required=True,
        help="Oracle id of the stream (--claim-name is the operations guide's name for it).",
    ),
    click.option("--holdout", required=True, help="Holdout ref of the stream."),
]


def _stream(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_stream_options):
        fn = option(fn)
    return fn


@click.group("canary", context_settings={"help_option_names": ["-h", "--help"]})
def canary() -> None:
    """Canary drift streams: status and signed reset."""


@canary.command("status")
@data_dir_option
@_stream
@json_option
@domain_errors
def status(data_dir: Path, oracle_id: str, holdout: str, as_json: bool) -> None:
    """Show a stream's drift state (e-value, barrier, frozen)."""
    with governance_session(data_dir, writable=False) as service, service.store.read() as conn:
        state = canary_table.find_canary_state(conn, oracle_id, holdout)
    if state is None:
        raise NotFound(
            f"canary state not found for ({oracle_id}, {holdout}): no canary pulse has run "
            "for this stream yet"
        )
    doc = {"oracle_id": oracle_id, "holdout": holdout, **state.to_json()}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"canary ({oracle_id}, {holdout}): {'FROZEN' if state.drift_frozen else 'healthy'}")
    for label, value in (
        ("e_drift", state.e_drift),
        ("barrier", state.barrier),
        ("last_epoch_checked", state.last_epoch_checked),
        ("counts", list(state.counts)),
        ("total", state.total),
    ):
        click.echo(f"  {label + ':':20} {value}")


@canary.command("reset")
@data_dir_option
@_stream
@click.option(
    "--governance-event",
    "document_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Signed canary_reset event document (evidenceos-operator sign-canary-reset).",
)
@json_option
@domain_errors
def reset(data_dir: Path, oracle_id: str, holdout: str, document_path: Path, as_json: bool) -> None:
    """Reset a tripped stream with a signed governance event document."""
    document = read_input_file(document_path, "governance event document")
    with governance_session(data_dir, writable=True) as service:
        result = service.reset_canary(oracle_id, holdout, document)
        service.export()
    emit_mutation(result, as_json, f"canary ({oracle_id}, {holdout}) reset")
