"""JSON-lines logging (DESIGN §7): one object per line on stderr, machine-parseable."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=False)


def parse_level(directive: str) -> tuple[int, dict[str, int]]:
    """``--log`` takes tracing-style directives: ``info`` or ``warn,evidenceos.rpc=debug``."""
    default = logging.INFO
    per_logger: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in directive.split(","))):
        target, _, level = part.rpartition("=")
        value = _LEVELS.get(level.lower())
        if value is None:
            raise ValueError(f"unknown log level {level!r} in --log {directive!r}")
        if target:
            per_logger[target.replace("::", ".").replace("evidenceos_daemon", "evidenceos")] = value
        else:
            default = value
    return default, per_logger


def setup_logging(directive: str) -> None:
    default, per_logger = parse_level(directive)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(default)
    for name, level in per_logger.items():
        logging.getLogger(name).setLevel(level)
