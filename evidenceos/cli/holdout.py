"""``evidenceosctl holdout encrypt|decrypt``: encrypted holdout label files (spec 50 §3.10, §4.12).

The data key is named by ``--key-id`` and read from ``EVIDENCEOS_HOLDOUT_KEY_<ID>`` (the variable
the daemon reads), or from ``--key-file`` (64 hex characters, owner-only). No flag carries the key
itself: command lines end up in ``ps`` output and shell history. Labels are never printed; they
are written only where ``--out`` says.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from evidenceos.cli._common import data_dir_option, domain_errors, emit_json, json_option
from evidenceos.core.holdout import (
    HOLDOUT_POOL_SCOPES,
    decode_labels_enc,
    key_env_var,
    key_from_env,
    validate_holdout_labels,
)
from evidenceos.store.holdouts import (
    HOLDOUTS_DIR,
    HoldoutRegistry,
    load_key_file,
    seal_labels,
    write_encrypted_holdout,
    write_label_file,
)

__all__ = ["holdout"]

_key_id_option = click.option(
    "--key-id",
    help="Key id; the key is read from EVIDENCEOS_HOLDOUT_KEY_<ID> (upper-cased, - becomes _).",
)
_key_file_option = click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the 32-byte key as 64 hex characters (mode 0600); overrides the env var.",
)

_ENCRYPT_TARGET = "give --out PATH (write a labels.enc file) or --ref HOLDOUT_REF (register it)"


def _key(key_id: str | None, key_file: Path | None) -> bytes:
    if key_file is not None:
        if key_id is not None:
            key_env_var(key_id)  # still validate the id: it may go into a manifest
        return load_key_file(key_file)
    if key_id is None:
        raise click.UsageError(
            "give --key-id (key read from EVIDENCEOS_HOLDOUT_KEY_<ID>) or --key-file"
        )
    return key_from_env(os.environ, key_id)


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.FileError(str(path), hint=exc.strerror) from None


@click.group("holdout", context_settings={"help_option_names": ["-h", "--help"]})
def holdout() -> None:
    """Encrypt holdout labels at rest (labels.enc) and check them.

    A holdout's labels are one byte per row, each 0x00 or 0x01, 1..4096 rows. Keys are 32
    random bytes as 64 hex characters, e.g. `openssl rand -hex 32`.
    """


@holdout.command("encrypt")
@click.option(
    "--in",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Plaintext label file: one byte per row, each 0x00 or 0x01.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the labels.enc payload to this file (mode 0600).",
)
@click.option(
    "--ref",
    help="Instead of --out, register the holdout as <data-dir>/holdouts/<REF>/ "
    "(manifest.json + labels.enc, random handle).",
)
@_key_id_option
@_key_file_option
@click.option("--k-bits-budget", type=float, help="With --ref: manifest holdout_k_bits_budget.")
@click.option(
    "--access-credit-budget",
    type=float,
    help="With --ref: manifest holdout_access_credit_budget.",
)
@click.option(
    "--pool-scope",
    type=click.Choice(sorted(HOLDOUT_POOL_SCOPES)),
    help="With --ref: manifest holdout_pool_scope.",
)
@data_dir_option
@json_option
@domain_errors
def encrypt(
    input_path: Path,
    out_path: Path | None,
    ref: str | None,
    key_id: str | None,
    key_file: Path | None,
    k_bits_budget: float | None,
    access_credit_budget: float | None,
    pool_scope: str | None,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Encrypt a plaintext label file with AES-256-GCM.

    Either write the payload to --out (then place it as labels.enc next to a manifest whose
    encryption_key_id is the key id), or register a new holdout with --ref, which writes the
    manifest too. Start the daemon with EVIDENCEOS_HOLDOUT_KEY_<ID> set.
    """
    if out_path is not None and ref is not None:
        raise click.UsageError("give either --out PATH or --ref HOLDOUT_REF, not both")
    if out_path is None and ref is None:
        raise click.UsageError(_ENCRYPT_TARGET)
    if ref is None and (
        k_bits_budget is not None or access_credit_budget is not None or pool_scope is not None
    ):
        raise click.UsageError(
            "--k-bits-budget, --access-credit-budget and --pool-scope need --ref"
        )
    labels = validate_holdout_labels(_read_input(input_path))
    doc: dict[str, object] = {"status": "ok", "len": len(labels), "encryption_key_id": key_id}
    if ref is not None:
        if key_id is None:
            raise click.UsageError(
                "--ref needs --key-id: the manifest names the key the daemon uses"
            )
        key = _key(key_id, key_file)
        manifest = write_encrypted_holdout(
            data_dir,
            ref,
            labels,
            key_id,
            key,
            int(time.time()),
            k_bits_budget=k_bits_budget,
            access_credit_budget=access_credit_budget,
            pool_scope=pool_scope,
        )
        holdout_dir = data_dir / HOLDOUTS_DIR / ref
        doc.update(
            holdout_ref=ref,
            holdout_dir=str(holdout_dir),
            holdout_handle_hex=manifest.holdout_handle.hex(),
        )
        lines = [
            f"registered holdout {ref} in {holdout_dir}: {len(labels)} labels",
            f"holdout_handle_hex: {manifest.holdout_handle.hex()}",
            f"the daemon reads the key from {key_env_var(key_id)}",
        ]
    elif out_path is not None:
        write_label_file(out_path, seal_labels(labels, _key(key_id, key_file)))
        doc["out"] = str(out_path)
        lines = [f"wrote encrypted labels ({len(labels)} labels) to {out_path}"]
        if key_id is not None:
            lines.append(f"set encryption_key_id to {key_id!r} in the holdout's manifest.json")
    else:
        raise click.UsageError(_ENCRYPT_TARGET)
    lines.append(f"keep {input_path} away from shared locations; the daemon needs only labels.enc")
    if as_json:
        emit_json(doc)
    else:
        for line in lines:
            click.echo(line)


@holdout.command("decrypt")
@click.option(
    "--in",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labels.enc payload to decrypt.",
)
@click.option(
    "--ref",
    help="Instead of --in, open <data-dir>/holdouts/<REF>/ exactly as the daemon would "
    "(manifest, modes, key from the environment, length and hash checks).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the decrypted labels to this file (mode 0600). Without it nothing is written.",
)
@_key_id_option
@_key_file_option
@data_dir_option
@json_option
@domain_errors
def decrypt(
    input_path: Path | None,
    ref: str | None,
    out_path: Path | None,
    key_id: str | None,
    key_file: Path | None,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Decrypt and verify a labels.enc payload; print a summary, never the labels.

    With --in, the key comes from --key-id or --key-file. With --ref, the holdout is checked as
    the daemon would check it, so the key must be in EVIDENCEOS_HOLDOUT_KEY_<ID> for the
    manifest's encryption_key_id.
    """
    if input_path is not None and ref is not None:
        raise click.UsageError("give either --in PATH or --ref HOLDOUT_REF, not both")
    doc: dict[str, object] = {"status": "ok"}
    if ref is not None:
        if key_id is not None or key_file is not None:
            raise click.UsageError(
                "--ref checks the holdout as the daemon does: the key comes from the manifest's "
                "encryption_key_id and EVIDENCEOS_HOLDOUT_KEY_<ID>; drop --key-id/--key-file"
            )
        registry = HoldoutRegistry(data_dir, allow_plaintext=False, synthetic=False, env=os.environ)
        resolved = registry.resolve(ref)
        labels = resolved.labels
        doc.update(holdout_ref=ref, holdout_handle_hex=resolved.handle.hex())
        source = f"holdout {ref}"
    elif input_path is not None:
        labels = decode_labels_enc(_read_input(input_path), _key(key_id, key_file))
        source = str(input_path)
    else:
        raise click.UsageError("give --in PATH (a labels.enc file) or --ref HOLDOUT_REF")
    doc["len"] = len(labels)
    doc["out"] = None if out_path is None else str(out_path)
    if out_path is not None:
        write_label_file(out_path, labels)
    if as_json:
        emit_json(doc)
    elif out_path is not None:
        click.echo(f"decrypted {len(labels)} labels from {source} to {out_path}")
    else:
        click.echo(
            f"{source}: {len(labels)} labels decrypt and verify; labels not shown "
            "(use --out PATH to write them)"
        )
