"""Canonical bytes for log entries: RFC 8785 JSON with a top-level ``kind`` (DESIGN §4, §9).

RFC 8785 writes integral floats as integers and refuses integers beyond 2^53 - 1, so callers
keep such values (u64 counters, large ids) as strings.

Most entries hold only ASCII-keyed objects, arrays, strings, safe integers, booleans and null.
For those, the standard library's C encoder with sorted keys and no whitespace writes exactly
the RFC 8785 bytes (same escapes, same key order), several times faster than the pure-Python
``rfc8785`` package, which still handles everything else (floats, non-ASCII keys, refusals).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import rfc8785

from evidenceos.errors import InvalidArgument

MAX_SAFE_INTEGER = 2**53 - 1

_fast_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _one_shot_encoder() -> Callable[[Any], str]:
    """The C encoder behind ``_fast_encoder.encode``, built once: ``JSONEncoder.encode`` builds
    a new one (and a circular-reference dict) on every call, which is most of its cost for the
    small entries the log takes. No circular check is needed: ``_fast_path_ok`` walks the value
    first. Falls back to ``_fast_encoder.encode`` where the interpreter has no C encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _fast_encoder.encode
    chunks = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    sample = {"b": [1, "\u00e9\n", None, True], "a": {"z": -(2**53) + 1, "y": ""}}
    return encode if encode(sample) == _fast_encoder.encode(sample) else _fast_encoder.encode


_encode_fast = _one_shot_encoder()


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one log entry; the entry must name its ``kind``."""
    kind = entry.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidArgument("log entry needs a non-empty string 'kind'")
    return canonical_json(entry)


def canonical_json(value: Any) -> bytes:
    if _fast_path_ok(value):
        try:
            return _encode_fast(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 say why
            pass
    try:
        encoded: bytes = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"value has no canonical JSON form: {exc}") from exc
    return encoded


def _fast_path_ok(value: Any) -> bool:
    """True when the C encoder's output is the RFC 8785 form of ``value``.

    UTF-16 key order (RFC 8785 §3.2.3) equals code-point order for ASCII keys; other key sets
    and every float take the slow path."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            of = type(item)  # scalars checked here: most entries are flat objects
            if of is str or of is bool or item is None:
                continue
            if of is int:
                if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    return False
            elif not _fast_path_ok(item):
                return False
        return True
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if kind is list:
        return all(_fast_path_ok(item) for item in value)
    return False
