"""Every ``gva`` command the docs show parses with today's flags (synopses with placeholders or
alternatives are skipped)."""

import re
import shlex
from pathlib import Path

import pytest

from validation.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            text = line.strip().split("  #")[0].strip()
            if not text.startswith("gva ") or "|" in text or "[" in text or re.search(r"\b[A-Z]{3,}\b", text):
                continue  # a synopsis with alternatives, optional parts or placeholders
            found.append((page.name, text))
    return found


COMMANDS = _commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}: {c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command, capsys):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        if exit.code == 0:  # --help
            return
        pytest.fail(f"{page}: `{command}` does not parse ({capsys.readouterr().err.strip()}); exit {exit.code}")
