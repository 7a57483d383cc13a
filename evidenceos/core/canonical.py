"""Canonical bytes for log entries: RFC 8785 JSON with a top-level ``kind`` (DESIGN §4, §9).

RFC 8785 writes integral floats as integers and refuses integers beyond 2^53 - 1, so callers
keep such values (u64 counters, large ids) as strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rfc8785

from evidenceos.errors import InvalidArgument

MAX_SAFE_INTEGER = 2**53 - 1


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one log entry; the entry must name its ``kind``."""
    kind = entry.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidArgument("log entry needs a non-empty string 'kind'")
    return canonical_json(entry)


def canonical_json(value: Any) -> bytes:
    try:
        encoded: bytes = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"value has no canonical JSON form: {exc}") from exc
    return encoded
