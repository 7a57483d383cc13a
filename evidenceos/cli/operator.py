"""``evidenceos-operator``: produce signed operator records (OPERATIONS.md, spec 50 §5).

``sign-oracle-record`` and ``sign-epoch-control`` sign with the operator's seed and stage the
record in the data dir's database, logged as a chained governance event (the daemon applies it
on SIGHUP). ``sign-canary-reset`` writes the signed document ``evidenceosctl canary reset``
needs; it touches no data dir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from evidenceos.cli._common import data_dir_option, domain_errors, emit_json, json_option
from evidenceos.cli._governance_common import (
    emit_mutation,
    governance_session,
    read_input_file,
    require_signer,
    required_key_id_option,
    required_signing_key_option,
)
from evidenceos.core.governance import EVENT_CANARY_RESET, canary_reset_payload
from evidenceos.errors import FailedPrecondition


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sign oracle operator records and epoch-control records offline."""


@main.command("sign-oracle-record")
@data_dir_option
@click.option("--oracle-id", required=True, help="Oracle id the record configures.")
@click.option(
    "--ttl-epochs",
    required=True,
    type=click.IntRange(min=0, max=2**53 - 1),
    help="Oracle TTL; in production also the record's freshness window in seconds.",
)
@required_signing_key_option
@required_key_id_option
@click.option(
    "--calibration-manifest-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibration manifest; the SHA-256 of its exact bytes is signed.",
)
@click.option(
    "--disjointness-proof-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Disjointness proof; the SHA-256 of its exact bytes is signed.",
)
@click.option(
    "--disjointness-scope", required=True, help="Scope of the attestation, e.g. global/settle."
)
@json_option
@domain_errors
def sign_oracle_record(
    data_dir: Path,
    oracle_id: str,
    ttl_epochs: int,
    signing_key: Path,
    key_id: str,
    calibration_manifest_path: Path,
    disjointness_proof_path: Path,
    disjointness_scope: str,
    as_json: bool,
) -> None:
    """Sign and stage a provenance-complete oracle record (applied on the daemon's SIGHUP)."""
    signer = require_signer(signing_key, key_id)
    manifest = read_input_file(calibration_manifest_path, "calibration manifest")
    proof = read_input_file(disjointness_proof_path, "disjointness proof")
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_signed_record(
            oracle_id,
            ttl_epochs,
            signer,
            calibration_manifest=manifest,
            disjointness_proof=proof,
            disjointness_scope=disjointness_scope,
        )
        service.export()
    emit_mutation(result, as_json, f"signed record for oracle {oracle_id}", data_dir)


@main.command("sign-epoch-control")
@data_dir_option
@click.option(
    "--forced-epoch",
    required=True,
    type=click.IntRange(min=0, max=2**53 - 1),
    help="The forced epoch every claim will use.",
)
@required_signing_key_option
@required_key_id_option
@json_option
@domain_errors
def sign_epoch_control(
    data_dir: Path, forced_epoch: int, signing_key: Path, key_id: str, as_json: bool
) -> None:
    """Sign and stage an epoch control record (applied on the daemon's SIGHUP)."""
    signer = require_signer(signing_key, key_id)
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_epoch(forced_epoch, signer)
        service.export()
    emit_mutation(result, as_json, f"forced epoch {forced_epoch}", data_dir)


@main.command("sign-canary-reset")
@click.option("--oracle-id", "--claim-name", "oracle_id", required=True, help="Stream oracle id.")
@click.option("--holdout", required=True, help="Stream holdout ref.")
@required_signing_key_option
@required_key_id_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signed document (refuses to overwrite).",
)
@json_option
@domain_errors
def sign_canary_reset(
    oracle_id: str, holdout: str, signing_key: Path, key_id: str, out: Path, as_json: bool
) -> None:
    """Write a signed canary_reset document for `evidenceosctl canary reset`.

    The document is valid for 24 hours and for this stream only, and can be used once.
    """
    signer = require_signer(signing_key, key_id)
    if out.exists():
        raise FailedPrecondition(f"{out} already exists; choose a new file")
    event = signer.sign_event(
        EVENT_CANARY_RESET, int(time.time()), canary_reset_payload(oracle_id, holdout)
    )
    doc = event.to_json()
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"wrote signed canary_reset {doc['event_id']} to {out}")
