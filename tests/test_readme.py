"""The README's two commands stay true: CI runs the README's test command, and every
subcommand the README shows exists."""

import re
from pathlib import Path

import pytest

from sigprop.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)


def test_readme_has_the_two_commands():
    commands = _commands()
    assert len(commands) >= 2
    assert "sigprop demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    for step in _commands()[1].split("&&"):
        step = step.strip()
        assert step.replace("pip install", "python -m pip install", 1) in ci or step in ci, step


@pytest.mark.parametrize("name", sorted(set(re.findall(r"`sigprop ([\w-]+)", README))))
def test_readme_subcommands_exist(name):
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert name in choices
