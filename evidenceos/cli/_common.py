"""Options and error handling shared by the command-line tools (STYLE: sqlite-utils' CLI)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from evidenceos.errors import Code, EvidenceOSError

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes, documented in docs/cli.md.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./data"),
    show_default=True,
    help="Daemon data directory (holds evidenceos.db, keys/ and the exported views).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON (schema in schema/)."
)


def domain_errors(fn: F) -> F:
    """Turn domain errors into a one-line message and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvidenceOSError as exc:
            code = EXIT_USAGE if exc.code is Code.INVALID_ARGUMENT else EXIT_ERROR
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True))
