"""``evidenceosctl nullspec create|install|activate|list|show`` (spec 50 §3.4, §4.1-§4.4;
OPERATIONS "NullSpec lifecycle").

``create`` signs a contract offline (nothing is written to a data dir). ``install`` verifies and
stores a contract — inert until activated — and logs a ``nullspec_install`` event. ``activate``
stages the active contract for ``(oracle_id, holdout)`` (DESIGN §5): it takes effect when the
daemon next starts or receives SIGHUP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from evidenceos.cli._common import data_dir_option, domain_errors, emit_json, json_option
from evidenceos.cli._governance_common import (
    authority_keys_dir_option,
    echo_table,
    emit_mutation,
    governance_session,
    key_id_option,
    load_signer,
    read_input_file,
    require_signer,
    required_signing_key_option,
    signing_key_option,
)
from evidenceos.core.governance import decode_hex, load_json_bytes
from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    NullSpecContract,
    p0_from_counts,
)
from evidenceos.errors import InvalidArgument, NotFound
from evidenceos.service.governance import GovernanceService
from evidenceos.store import governance as gov_table

__all__ = ["nullspec"]

_U64 = click.IntRange(min=0, max=2**53 - 1)


def _hex32(text: str, flag: str) -> bytes:
    value = decode_hex(text)
    if value is None or len(value) != 32:
        raise InvalidArgument(f"{flag}: expected 32-byte hex (64 hex characters)")
    return value


@click.group("nullspec", context_settings={"help_option_names": ["-h", "--help"]})
def nullspec() -> None:
    """NullSpec contracts: author and sign, install, activate per (oracle_id, holdout)."""


@nullspec.command("create")
@click.option("--oracle-id", required=True, help="Oracle the contract is for.")
@click.option("--holdout", required=True, help="Holdout the contract is for.")
@click.option(
    "--resolution-hash", required=True, help="Oracle resolution hash (64 hex characters)."
)
@click.option(
    "--from-calibration-buckets",
    "buckets_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSON {"counts": [...], "epoch_created": N, "calibration_manifest_hash": hex|null}.',
)
@click.option("--ttl-epochs", required=True, type=_U64, help="Validity after epoch_created.")
@click.option(
    "--alpha",
    required=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Dirichlet concentration per bucket (> 0).",
)
@required_signing_key_option
@click.option("--created-by", required=True, help="Authority key id (file stem in the keyring).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the contract here instead of stdout.",
)
@json_option
@domain_errors
def create(
    oracle_id: str,
    holdout: str,
    resolution_hash: str,
    buckets_path: Path,
    ttl_epochs: int,
    alpha: float,
    signing_key: Path,
    created_by: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """Build and sign a DiscreteBuckets contract from calibration counts (spec 50 §4.1).

    p0 is the add-one smoothed bucket distribution of the counts. Writes nothing to a data dir:
    install the output with `evidenceosctl nullspec install --contract FILE`.
    """
    signer = require_signer(signing_key, created_by)
    doc = load_json_bytes(read_input_file(buckets_path, "calibration buckets file"), "buckets")
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{buckets_path}: expected a JSON object")
    counts, epoch_created = doc.get("counts"), doc.get("epoch_created")
    if not isinstance(counts, list):
        raise InvalidArgument(f"{buckets_path}: counts must be an array of integers")
    if isinstance(epoch_created, bool) or not isinstance(epoch_created, int) or epoch_created < 0:
        raise InvalidArgument(f"{buckets_path}: epoch_created must be an unsigned integer")
    calibration = doc.get("calibration_manifest_hash")
    if calibration is not None and not isinstance(calibration, str):
        raise InvalidArgument(f"{buckets_path}: calibration_manifest_hash must be hex or null")
    p0 = p0_from_counts(counts)
    contract = NullSpecContract(
        oracle_id=oracle_id,
        oracle_resolution_hash=_hex32(resolution_hash, "--resolution-hash"),
        holdout_handle=holdout,
        epoch_created=epoch_created,
        ttl_epochs=ttl_epochs,
        kind=DiscreteBuckets(p0),
        eprocess=DirichletMultinomialMixture(tuple([alpha] * len(p0))),
        created_by=created_by,
        calibration_manifest_hash=(
            None if calibration is None else _hex32(calibration, "calibration_manifest_hash")
        ),
    ).signed(signer.private_key)
    text = json.dumps(contract.to_json(), indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        if as_json:
            emit_json(contract.to_json())
        else:
            click.echo(f"wrote nullspec {contract.id_hex} to {out}")
        return
    click.echo(text)
    if not as_json:
        click.echo(f"nullspec {contract.id_hex} signed by {created_by}", err=True)


@nullspec.command("install")
@data_dir_option
@click.option(
    "--contract",
    "contract_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Signed contract JSON (from `nullspec create`).",
)
@signing_key_option
@key_id_option
@authority_keys_dir_option
@json_option
@domain_errors
def install(
    data_dir: Path,
    contract_path: Path,
    signing_key: Path | None,
    key_id: str | None,
    nullspec_authority_keys_dir: Path | None,
    as_json: bool,
) -> None:
    """Verify and store a contract, and log a nullspec_install governance event.

    Checks the schema, the content id, the kind/e-process pairing and the embedded signature
    against the authority keyring. An installed contract does nothing until activated.
    """
    signer = load_signer(signing_key, key_id)
    contract = NullSpecContract.from_bytes(read_input_file(contract_path, "contract file"))
    with governance_session(
        data_dir, writable=True, nullspec_authority_keys_dir=nullspec_authority_keys_dir
    ) as service:
        result = service.install_nullspec(contract, signer)
        service.export()
    emit_mutation(
        result,
        as_json,
        f"installed nullspec {contract.id_hex} for ({contract.oracle_id}, "
        f"{contract.holdout_handle}); activate it with `evidenceosctl nullspec activate`",
    )


@nullspec.command("activate")
@data_dir_option
@click.option("--oracle-id", required=True, help="Oracle id of the claims it applies to.")
@click.option("--holdout", required=True, help="Holdout ref of the claims it applies to.")
@click.option("--nullspec-id", required=True, help="Installed contract id (64 hex characters).")
@signing_key_option
@key_id_option
@json_option
@domain_errors
def activate(
    data_dir: Path,
    oracle_id: str,
    holdout: str,
    nullspec_id: str,
    signing_key: Path | None,
    key_id: str | None,
    as_json: bool,
) -> None:
    """Stage the active contract for (oracle_id, holdout); applied at the next SIGHUP/start.

    Production mode (EVIDENCEOS_PRODUCTION_MODE=1) refuses an unsigned activation.
    """
    signer = load_signer(signing_key, key_id)
    with governance_session(data_dir, writable=True) as service:
        result = service.stage_activation(oracle_id, holdout, nullspec_id, signer)
        service.export()
    emit_mutation(
        result,
        as_json,
        f"nullspec {nullspec_id.lower()} for ({oracle_id}, {holdout})",
        data_dir,
    )


def _entries(service: GovernanceService) -> list[dict[str, Any]]:
    with service.store.read() as conn:
        contracts = gov_table.iter_nullspecs(conn)
        applied = gov_table.iter_applied_activations(conn)
        staged = gov_table.iter_staged_activations(conn)
    out: list[dict[str, Any]] = []
    for contract, installed_at_ms in contracts:
        out.append(
            {
                "nullspec_id": contract.id_hex,
                "oracle_id": contract.oracle_id,
                "holdout_handle": contract.holdout_handle,
                "epoch_created": contract.epoch_created,
                "ttl_epochs": contract.ttl_epochs,
                "created_by": contract.created_by,
                "installed_at_ms": installed_at_ms,
                "active_for": [
                    {"oracle_id": o, "holdout": h}
                    for o, h, n in applied
                    if n == contract.nullspec_id
                ],
                "staged_for": [
                    {"oracle_id": s.oracle_id, "holdout": s.holdout_ref}
                    for s in staged
                    if s.nullspec_id == contract.nullspec_id
                ],
                "contract": contract.to_json(),
            }
        )
    return out


def _status(entry: dict[str, Any]) -> str:
    marks = [f"active {a['oracle_id']}/{a['holdout']}" for a in entry["active_for"]]
    marks += [f"staged {s['oracle_id']}/{s['holdout']}" for s in entry["staged_for"]]
    return ", ".join(marks) or "installed"


@nullspec.command("list")
@data_dir_option
@json_option
@domain_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List installed contracts (sorted by id) and where each is active or staged."""
    with governance_session(data_dir, writable=False) as service:
        entries = _entries(service)
    if as_json:
        emit_json({"nullspecs": entries})
        return
    echo_table(
        ["NULLSPEC_ID", "ORACLE_ID", "HOLDOUT", "EPOCH_CREATED", "TTL", "BY", "STATUS"],
        [
            [
                e["nullspec_id"],
                e["oracle_id"],
                e["holdout_handle"],
                e["epoch_created"],
                e["ttl_epochs"],
                e["created_by"],
                _status(e),
            ]
            for e in entries
        ],
    )


@nullspec.command("show")
@data_dir_option
@click.option("--nullspec-id", required=True, help="Contract id (64 hex characters).")
@json_option
@domain_errors
def show(data_dir: Path, nullspec_id: str, as_json: bool) -> None:
    """Show one installed contract."""
    wanted = _hex32(nullspec_id, "--nullspec-id").hex()
    with governance_session(data_dir, writable=False) as service:
        entries = [e for e in _entries(service) if e["nullspec_id"] == wanted]
    if not entries:
        raise NotFound(
            f"nullspec not found: {wanted} is not installed; `evidenceosctl nullspec list` "
            "shows the installed ones"
        )
    entry = entries[0]
    if as_json:
        emit_json(entry)
        return
    contract = entry["contract"]
    for label, value in (
        ("nullspec_id", entry["nullspec_id"]),
        ("oracle_id", entry["oracle_id"]),
        ("holdout", entry["holdout_handle"]),
        ("epoch_created", entry["epoch_created"]),
        ("ttl_epochs", entry["ttl_epochs"]),
        ("valid through epoch", entry["epoch_created"] + entry["ttl_epochs"]),
        ("kind", json.dumps(contract["kind"])),
        ("eprocess", json.dumps(contract["eprocess"])),
        ("resolution hash", bytes(contract["oracle_resolution_hash"]).hex()),
        (
            "calibration hash",
            "-"
            if contract["calibration_manifest_hash"] is None
            else bytes(contract["calibration_manifest_hash"]).hex(),
        ),
        ("created_by", entry["created_by"]),
        ("status", _status(entry)),
    ):
        click.echo(f"{label + ':':22} {value}")
