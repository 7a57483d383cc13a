"""The reference's hidden aliases (spec 50 §4.0) run the same commands and stay out of help."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from evidenceos.cli.ctl import main


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        (["operator", "list"], ["oracle", "list"]),
        (["operator-epoch", "advance"], ["epoch", "advance"]),
        (["oracle", "sign-oracle-record"], ["oracle", "set-ttl"]),
        (["oracle", "sign-oracle-calibration"], ["oracle", "rotate-calibration"]),
        (["epoch", "sign-epoch-control"], ["epoch", "advance"]),
    ],
)
def test_alias_runs_the_same_command(alias: list[str], target: list[str]) -> None:
    runner = CliRunner()
    via_alias = runner.invoke(main, [*alias, "--help"])
    direct = runner.invoke(main, [*target, "--help"])
    assert via_alias.exit_code == direct.exit_code == 0
    body = direct.output.split("\n", 1)[1]
    assert via_alias.output.split("\n", 1)[1] == body


def test_aliases_are_hidden_from_help() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"]).output
    assert "operator-epoch" not in top
    assert "  operator " not in top
    assert "sign-oracle-record" not in runner.invoke(main, ["oracle", "--help"]).output
    assert "sign-epoch-control" not in runner.invoke(main, ["epoch", "--help"]).output
