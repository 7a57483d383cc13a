"""``evidenceosctl epoch advance`` (spec 50 §3.3, §4.9; OPERATIONS "Epoch settlement").

Stages a signed forced epoch; the daemon applies it at its next start or SIGHUP, after which
every claim uses it as its epoch (spec 50 §7). Going backwards is allowed and logged.
"""

from __future__ import annotations

from pathlib import Path

import click

from evidenceos.cli._common import data_dir_option, domain_errors, json_option
from evidenceos.cli._governance_common import (
    emit_mutation,
    governance_session,
    require_signer,
    required_key_id_option,
    required_signing_key_option,
)

__all__ = ["epoch"]


@click.group("epoch", context_settings={"help_option_names": ["-h", "--help"]})
def epoch() -> None:
    """The operator-controlled (forced) epoch."""


@epoch.command("advance")
@data_dir_option
@click.option(
    "--to",
    "to",
    required=True,
    type=click.IntRange(min=0, max=2**53 - 1),
    help="The forced epoch every claim will use.",
)
@required_signing_key_option
@required_key_id_option
@json_option
@domain_errors
def advance(data_dir: Path, to: int, signing_key: Path, key_id: str, as_json: bool) -> None:
    """Stage a signed forced epoch; applied at the daemon's next SIGHUP or start."""
    signer = require_signer(signing_key, key_id)
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_epoch(to, signer)
        service.export()
    emit_mutation(result, as_json, f"forced epoch {to}", data_dir)
