"""Every command of the command-line tools is documented and explains itself.

The click groups of ``evidenceosctl`` and ``evidenceos-operator`` are walked, so a new command
fails here until README.md or a page under docs/ names it — by its full path
(``evidenceosctl log watch``) or in a code span of its words (`` `log watch --state FILE` ``) —
and it has --help text; every read command offers --json.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from evidenceos.cli.ctl import main as ctl_main
from evidenceos.cli.daemon import main as daemon_main
from evidenceos.cli.operator import main as operator_main
from tests.support.paths import REPO_ROOT

TOOLS: dict[str, click.Command] = {
    "evidenceosctl": ctl_main,
    "evidenceos-operator": operator_main,
    "evidenceosd": daemon_main,
}

#: Commands that only change things and print what they did; they still offer --json. Every
#: other command is a read command.
MUTATING_WORDS = (
    "rotate",
    "export",
    "backup",
    "encrypt",
    "decrypt",
    "advance",
    "activate",
    "install",
    "create",
    "reset",
    "set-ttl",
    "rotate-calibration",
    "sign-",
)


def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            if not sub.hidden:  # hidden aliases are documented once, in docs/cli.md
                yield from walk(sub, (*path, name))


def all_commands() -> list[tuple[str, click.Command]]:
    return [item for tool, root in TOOLS.items() for item in walk(root, (tool,))]


def leaf_commands() -> list[tuple[str, click.Command]]:
    return [(p, c) for p, c in all_commands() if not isinstance(c, click.Group)]


def documentation() -> str:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_the_walk_finds_the_commands() -> None:
    paths = {path for path, _ in all_commands()}
    assert {
        "evidenceosctl etl verify",
        "evidenceosctl verify capsule",
        "evidenceosctl log head",
        "evidenceosctl log watch",
        "evidenceosctl backup",
        "evidenceos-operator",
        "evidenceosd",
    } <= paths


def documented_paths(text: str) -> set[str]:
    """Command paths the pages name in code spans, without or with the tool name:
    `` `nullspec show --nullspec-id` `` names ``nullspec show``; `` `keys rotate|list` ``
    names ``keys rotate`` and ``keys list``."""
    found: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        words = span.split()
        if words and words[0] in TOOLS:
            words = words[1:]
        variants: list[list[str]] = [[]]
        for word in words:
            if word.startswith("-") or not re.fullmatch(r"[a-z0-9|-]+", word):
                break
            variants = [[*v, alt] for v in variants for alt in word.split("|") if alt]
        for variant in variants:
            for end in range(1, len(variant) + 1):
                found.add(" ".join(variant[:end]))
    return found


def test_every_command_is_named_in_the_readme_or_docs() -> None:
    text = documentation()
    docs = " ".join(text.split())  # line breaks inside a path still count
    spans = documented_paths(text)
    missing = [
        path
        for path, _ in leaf_commands()
        if path not in docs and path.split(" ", 1)[-1] not in spans
    ]
    assert not missing, "commands not named (by full path) in README.md or docs/*.md: " + ", ".join(
        missing
    )


@pytest.mark.parametrize(("path", "command"), all_commands(), ids=lambda v: str(v))
def test_every_command_has_help_text(path: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"{path} has no help text"
    undocumented = [
        param.opts[0]
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not undocumented, f"{path}: options without help: {undocumented}"
    words = path.split()[1:]
    root = TOOLS[path.split()[0]]
    result = CliRunner().invoke(root, [*words, "--help"])
    assert result.exit_code == 0, result.output
    first_line = (command.help or "").strip().splitlines()[0]
    assert " ".join(first_line.split()[:4]) in " ".join(result.output.split())


def test_every_read_command_offers_json() -> None:
    without = [
        path
        for path, command in leaf_commands()
        if not path.startswith("evidenceosd")
        and not any(word in path.split()[-1] for word in MUTATING_WORDS)
        and "--json" not in {o for p in command.params for o in getattr(p, "opts", [])}
    ]
    assert not without, f"read commands without --json: {without}"


def test_code_spans_name_commands() -> None:
    spans = documented_paths(
        "`keys rotate|list`, `nullspec show --nullspec-id X`, `evidenceosctl log watch`, `a.b`"
    )
    assert {"keys rotate", "keys list", "nullspec show", "log watch"} <= spans
    assert "nullspec show --nullspec-id" not in spans and "oracle list" not in spans
