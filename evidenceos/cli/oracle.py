"""``evidenceosctl oracle list|show|set-ttl|rotate-calibration`` (spec 50 §3.2, §4.5-§4.8;
OPERATIONS "Calibration and TTL management").

Records are signed with the daemon's payload rules (decision D1: one record model), staged in
the database and applied by the daemon on SIGHUP; ``list``/``show`` show the record in effect
and any staged one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from evidenceos.cli._common import data_dir_option, domain_errors, emit_json, json_option
from evidenceos.cli._governance_common import (
    echo_table,
    emit_mutation,
    format_unix,
    governance_session,
    require_signer,
    required_key_id_option,
    required_signing_key_option,
)
from evidenceos.core.governance import (
    OracleOperatorRecord,
    TrustedKeys,
    provenance_failures,
    verify_oracle_record,
)
from evidenceos.errors import EvidenceOSError, NotFound
from evidenceos.service.governance import GovernanceService, OracleRow

__all__ = ["oracle"]


@click.group("oracle", context_settings={"help_option_names": ["-h", "--help"]})
def oracle() -> None:
    """Signed oracle operator records: TTL, calibration hash, disjointness provenance."""


def _check(
    record: OracleOperatorRecord | None, trusted: TrustedKeys, now: int
) -> dict[str, Any] | None:
    """Would the daemon accept this record now? (dev rules, plus production provenance)."""
    if record is None:
        return None
    try:
        verify_oracle_record(record, trusted, now_unix_secs=now, enforce_provenance=False)
        verdict = "ok"
    except EvidenceOSError as exc:
        verdict = exc.message
    return {
        "verdict": verdict,
        "production_failures": [r.value for r in provenance_failures(record, now)],
        "fresh_until_unix": record.updated_at_epoch + record.ttl_epochs,
    }


def _row_json(row: OracleRow, service: GovernanceService, trusted: TrustedKeys) -> dict[str, Any]:
    now = service.now_s()
    return {
        "oracle_id": row.oracle_id,
        "applied": None if row.applied is None else row.applied.to_json(),
        "staged": None if row.staged is None else row.staged.to_json(),
        "applied_check": _check(row.applied, trusted, now),
        "staged_check": _check(row.staged, trusted, now),
    }


def _status(row: OracleRow) -> str:
    if row.applied is not None and row.staged is not None:
        return "applied, change staged"
    return "applied" if row.applied is not None else "staged"


@oracle.command("list")
@data_dir_option
@json_option
@domain_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List oracle records: the one in effect and any staged change."""
    with governance_session(data_dir, writable=False) as service:
        rows = service.oracle_rows()
        trusted = service.trusted_keys()
        docs = [_row_json(row, service, trusted) for row in rows]
    if as_json:
        emit_json({"oracles": docs})
        return
    table = []
    for row in rows:
        record = row.staged or row.applied
        assert record is not None  # noqa: S101 - a row has at least one record
        attestation = record.disjointness_attestation
        table.append(
            [
                row.oracle_id,
                record.ttl_epochs,
                (record.calibration_manifest_hash_hex or "-")[:16],
                "-" if attestation is None else attestation.scope,
                format_unix(record.updated_at_epoch),
                record.key_id,
                _status(row),
            ]
        )
    echo_table(["ORACLE_ID", "TTL", "CALIBRATION", "SCOPE", "UPDATED", "KEY", "STATUS"], table)


@oracle.command("show")
@data_dir_option
@click.option("--oracle-id", required=True, help="Oracle id.")
@json_option
@domain_errors
def show(data_dir: Path, oracle_id: str, as_json: bool) -> None:
    """Show one oracle's records and whether the daemon would accept them."""
    with governance_session(data_dir, writable=False) as service:
        rows = [r for r in service.oracle_rows() if r.oracle_id == oracle_id]
        if not rows:
            raise NotFound(
                f"oracle not found: {oracle_id!r} has no record; `evidenceosctl oracle list` "
                "shows the configured oracles"
            )
        doc = _row_json(rows[0], service, service.trusted_keys())
    if as_json:
        emit_json(doc)
        return
    click.echo(f"oracle {oracle_id}: {_status(rows[0])}")
    for stage in ("applied", "staged"):
        record, check = doc[stage], doc[f"{stage}_check"]
        if record is None:
            continue
        attestation = record["disjointness_attestation"]
        click.echo(f"  {stage}:")
        for label, value in (
            ("ttl_epochs", record["ttl_epochs"]),
            ("calibration", record["calibration_manifest_hash_hex"] or "-"),
            ("calibration_epoch", format_unix(record["calibration_epoch"])),
            (
                "disjointness",
                "-"
                if attestation is None
                else f"{attestation['statement_type']} {attestation['scope']} "
                f"proof {attestation['proof_sha256_hex']}",
            ),
            ("updated", format_unix(record["updated_at_epoch"])),
            ("fresh until", format_unix(check["fresh_until_unix"])),
            ("key_id", record["key_id"]),
            ("signature", check["verdict"]),
            (
                "production mode",
                "ok"
                if not check["production_failures"]
                else "refused: " + "; ".join(check["production_failures"]),
            ),
        ):
            click.echo(f"    {label + ':':18} {value}")


@oracle.command("set-ttl")
@data_dir_option
@click.option("--oracle-id", required=True, help="Oracle id.")
@click.option(
    "--ttl-epochs",
    required=True,
    type=click.IntRange(min=0, max=2**53 - 1),
    help="Oracle TTL in epochs (> 0); also the record's freshness window in seconds (D3).",
)
@required_signing_key_option
@required_key_id_option
@json_option
@domain_errors
def set_ttl(
    data_dir: Path, oracle_id: str, ttl_epochs: int, signing_key: Path, key_id: str, as_json: bool
) -> None:
    """Stage a re-signed record with a new TTL (calibration and attestation kept)."""
    signer = require_signer(signing_key, key_id)
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_ttl(oracle_id, ttl_epochs, signer)
        service.export()
    emit_mutation(result, as_json, f"oracle {oracle_id} ttl_epochs {ttl_epochs}", data_dir)


@oracle.command("rotate-calibration")
@data_dir_option
@click.option("--oracle-id", required=True, help="Oracle id.")
@click.option("--calib-hash", required=True, help="Calibration manifest SHA-256 (64 hex).")
@required_signing_key_option
@required_key_id_option
@json_option
@domain_errors
def rotate_calibration(
    data_dir: Path, oracle_id: str, calib_hash: str, signing_key: Path, key_id: str, as_json: bool
) -> None:
    """Stage a re-signed record with a new calibration manifest hash (a new oracle gets ttl 1)."""
    signer = require_signer(signing_key, key_id)
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_calibration(oracle_id, calib_hash, signer)
        service.export()
    emit_mutation(result, as_json, f"oracle {oracle_id} calibration {calib_hash}", data_dir)
