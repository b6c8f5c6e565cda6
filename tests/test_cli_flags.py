"""One name per option across app.py and the CLI; a renamed option's old spelling still works
for one release and says on stderr what to use instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from voiceface import cli


@pytest.fixture
def parsed(monkeypatch):
    """The arguments each command would run with (the commands themselves do not run)."""
    seen = {}
    for command in ("_build", "_eval"):
        monkeypatch.setattr(cli, command, lambda args: seen.update(vars(args)) or 0)
    return seen


@pytest.mark.parametrize("argv, dest, value, old", [
    (["build", "people", "--inversion-steps", "7"], "inversion_steps", 7, None),
    (["build", "people", "--steps", "7"], "inversion_steps", 7, "--steps"),
    (["build", "people"], "inversion_steps", None, None),
    (["eval", "people", "--bundle", "built"], "bundle", Path("built"), None),
    (["eval", "people", "--index", "built"], "bundle", Path("built"), "--index"),
    (["eval", "people"], "bundle", Path("index"), None),
])
def test_old_and_new_spellings_give_the_same_option(parsed, capsys, argv, dest, value, old):
    assert cli.main(argv) == 0
    assert parsed[dest] == value
    assert "steps" not in parsed and "index" not in parsed  # one destination per option
    new = {"inversion_steps": "--inversion-steps", "bundle": "--bundle"}[dest]
    stderr = capsys.readouterr().err
    assert stderr == (f"{old} is deprecated; use {new}\n" if old else "")


def test_help_shows_only_the_new_names():
    for command, new, old in (("build", "--inversion-steps", "--steps"),
                              ("eval", "--bundle", "--index")):
        shown = subprocess.run([sys.executable, "-m", "voiceface", command, "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
        assert new in shown and f"{old} " not in shown


@pytest.mark.slow
def test_app_and_cli_share_the_inversion_flags():
    shown = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    for flag in ("--bundle", "--backbone", "--inversion-steps", "--inversion-resolution"):
        assert flag in shown
