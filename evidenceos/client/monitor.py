"""Following a daemon's signed tree heads: the log monitor behind ``evidenceosctl log watch``.

:func:`prove_extension` checks that a new head extends an old one without trusting the daemon:
it fetches the audit path of the old tree's last leaf in the new tree, checks it against the new
signed root, rebuilds the RFC 6962 consistency proof from it and verifies that
(:mod:`evidenceos.client.verify`). :class:`TrustedKeys` checks head signatures against pinned
keys, or trusts each key id on first use when none are pinned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evidenceos.client import Client
from evidenceos.client.verify import (
    SignedTreeHead,
    VerificationError,
    consistency_proof_from_inclusion,
    verify_consistency,
    verify_head,
    verify_inclusion,
)

__all__ = [
    "GROWTH_RETRIES",
    "TrustedKeys",
    "head_from_json",
    "head_to_json",
    "load_head",
    "prove_extension",
    "save_head",
]

#: Times the monitor re-reads the head when the log grew between its two calls.
GROWTH_RETRIES = 5


class TrustedKeys:
    """ETL public keys by key id; without pinned keys, trust on first use of each key id."""

    def __init__(self, client: Client, pinned: dict[bytes, bytes]) -> None:
        self._client = client
        self.pinned = bool(pinned)
        self._keys = dict(pinned)

    def verify(self, head: SignedTreeHead) -> None:
        key = self._keys.get(head.key_id)
        if key is None:
            if self.pinned:
                raise VerificationError(
                    f"head of size {head.tree_size} is signed by key {head.key_id.hex()}, "
                    "which is not a trusted key"
                )
            key = self._client.public_key(head.key_id)
            self._keys[head.key_id] = key
        verify_head(head, key)


def prove_extension(
    client: Client, keys: TrustedKeys, old: SignedTreeHead, new: SignedTreeHead
) -> SignedTreeHead | None:
    """Prove ``new`` (or a later head, if the log grows meanwhile) extends ``old``.

    Returns the head that was proven; None when the log kept growing faster than an audit path
    could be paired with a head (try again later). Raises :class:`VerificationError` when the
    log shrank or forked.
    """
    for _ in range(GROWTH_RETRIES):
        if new.tree_size < old.tree_size:
            raise VerificationError(
                f"log shrank: head of size {new.tree_size} after a head of size {old.tree_size}"
            )
        if new.tree_size == old.tree_size or old.tree_size == 0:
            verify_consistency(old, new, [])
            return new
        m = old.tree_size
        proof = client.inclusion_proof(m - 1)
        if proof.root_hash != new.root_hash:  # the log grew between the two calls
            new = client.signed_tree_head()
            keys.verify(new)
            continue
        verify_inclusion(proof.leaf_hash, m - 1, new, proof.audit_path)
        path = consistency_proof_from_inclusion(m, new.tree_size, proof.leaf_hash, proof.audit_path)
        verify_consistency(old, new, path)
        return new
    return None


def head_to_json(head: SignedTreeHead) -> dict[str, Any]:
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "key_id": head.key_id.hex(),
        "signature": head.signature.hex(),
    }


def head_from_json(doc: dict[str, Any]) -> SignedTreeHead:
    return SignedTreeHead(
        tree_size=int(doc["tree_size"]),
        root_hash=bytes.fromhex(doc["root_hash"]),
        signature=bytes.fromhex(doc["signature"]),
        key_id=bytes.fromhex(doc["key_id"]),
    )


def load_head(path: Path) -> SignedTreeHead | None:
    """The head saved at ``path``, None if there is none; ValueError if the file is not one."""
    if not path.exists():
        return None
    try:
        return head_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} does not hold a saved tree head: {exc}") from exc


def save_head(path: Path, head: SignedTreeHead) -> None:
    """Write ``head`` to ``path`` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(head_to_json(head), fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
