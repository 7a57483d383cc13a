"""``evidenceosctl verify capsule``: fetch a capsule from a daemon and verify it offline.

Everything is checked on this side with :func:`evidenceos.client.verify.verify_capsule`: the tree
head's Ed25519 signature, the capsule hash, the inclusion proof to the signed root and the
consistency proof from the tree that ended with the capsule. Pin the ETL public key you trust with
``--public-key``; without it the daemon's own key for the head is used, which proves only that the
daemon is consistent with itself (the output says so).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from evidenceos.cli._common import EXIT_ERROR, EXIT_VERIFY_FAILED, emit_json, json_option
from evidenceos.cli._connect import connection_options
from evidenceos.errors import EvidenceOSError

if TYPE_CHECKING:  # the client (grpc, protobuf) loads only when a command runs
    from evidenceos.client import Client

__all__ = ["public_key_options", "read_public_keys", "rpc_errors", "verify"]


def _hex32(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.strip())
    except ValueError:
        raise click.BadParameter(f"{what} must be hex") from None
    if len(raw) != 32:
        raise click.BadParameter(f"{what} must be 32 bytes (64 hex digits)")
    return raw


def public_key_options(fn: Callable[..., object]) -> Callable[..., object]:
    fn = click.option(
        "--public-key",
        "public_keys",
        multiple=True,
        help="Trusted ETL public key, 64 hex digits (repeat for rotated keys).",
    )(fn)
    return click.option(
        "--public-key-file",
        "public_key_files",
        multiple=True,
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="File holding a trusted ETL public key as hex (repeatable).",
    )(fn)


def read_public_keys(values: tuple[str, ...], files: tuple[Path, ...]) -> dict[bytes, bytes]:
    """Trusted keys by key id (SHA-256 of the key)."""
    from evidenceos.client.verify import key_id_of

    keys = [_hex32(v, "--public-key") for v in values]
    keys += [_hex32(f.read_text(encoding="utf-8"), str(f)) for f in files]
    return {key_id_of(k): k for k in keys}


@contextlib.contextmanager
def rpc_errors(endpoint_of: Callable[[], str]) -> Iterator[None]:
    """A failed RPC or verification ends the command with one line and an exit code."""
    import grpc

    from evidenceos.client.verify import VerificationError

    try:
        yield
    except grpc.RpcError as exc:
        failed: object = exc
        code = getattr(failed, "code", lambda: None)()
        details = getattr(failed, "details", lambda: "")()
        name = code.name if code is not None else "ERROR"
        click.echo(f"error: daemon at {endpoint_of()}: {name}: {details}", err=True)
        sys.exit(EXIT_ERROR)
    except VerificationError as exc:
        click.echo(f"VERIFICATION FAILED: {exc}", err=True)
        sys.exit(EXIT_VERIFY_FAILED)
    except EvidenceOSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@click.group("verify", context_settings={"help_option_names": ["-h", "--help"]})
def verify() -> None:
    """Verify what a daemon hands out, offline, against keys you trust."""


@verify.command("capsule")
@click.option("--claim-id", required=True, help="Claim id, 64 hex digits.")
@public_key_options
@connection_options
@json_option
def verify_capsule_cmd(
    claim_id: str,
    public_keys: tuple[str, ...],
    public_key_files: tuple[Path, ...],
    client_factory: Callable[[], Client],
    as_json: bool,
) -> None:
    """Fetch a claim's capsule (FetchCapsule) and verify it offline.

    Checks the tree head signature, capsule hash, inclusion proof and consistency proof, and that
    the capsule belongs to --claim-id. Exits 3 when anything does not verify. Needs the auditor
    role on a daemon with authentication.
    """
    from evidenceos.client.verify import VerificationError, verify_capsule

    cid = _hex32(claim_id, "--claim-id")
    trusted = read_public_keys(public_keys, public_key_files)
    client: Client | None = None
    with rpc_errors(lambda: client.target if client else "?"):
        client = client_factory()
        with client:
            response = client.fetch_capsule(cid)
            key_id = bytes(response.signed_tree_head.key_id)
            pinned = bool(trusted)
            if pinned:
                if key_id not in trusted:
                    raise VerificationError(
                        f"tree head is signed by key {key_id.hex()}, which is not a trusted key"
                    )
                public_key = trusted[key_id]
            else:
                public_key = client.public_key(key_id)
            result = verify_capsule(response, public_key, claim_id=cid)
    doc = {
        "verified": True,
        "claim_id": cid.hex(),
        "capsule_hash": result.capsule_hash.hex(),
        "etl_index": result.etl_index,
        "tree_size": result.head.tree_size,
        "root_hash": result.head.root_hash.hex(),
        "key_id": result.head.key_id.hex(),
        "key_pinned": pinned,
        "certified": bool(result.capsule.get("certified", False)),
        "decision": result.capsule.get("decision"),
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(
        f"ok: capsule {doc['capsule_hash']} of claim {doc['claim_id']} is leaf "
        f"{doc['etl_index']} of the log signed at size {doc['tree_size']}"
    )
    click.echo(f"    root {doc['root_hash']}  key {doc['key_id']}")
    if not pinned:
        click.echo(
            "    note: key fetched from the daemon (proves self-consistency only); pin it with "
            "--public-key",
            err=True,
        )
