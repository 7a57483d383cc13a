"""``evidenceos-operator``: produce signed operator records (OPERATIONS.md, spec 50)."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sign oracle operator records and epoch-control records offline."""
