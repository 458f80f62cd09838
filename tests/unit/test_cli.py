"""The command line: help for every command, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def trainpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainpipe", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command", ["run", "compile", "validate", "serve", "registry", "submit", "schedule"]
)
def test_every_command_has_help(command):
    done = trainpipe(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_validate_exit_codes(tmp_path):
    assert trainpipe("validate", "digits", "--label-column", "label").returncode == 0
    missing = trainpipe("validate", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1
    assert "nope.csv" in missing.stdout + missing.stderr
    assert trainpipe("validate").returncode == 2


def test_serve_a_missing_model_ends_with_one_clear_line(tmp_path):
    done = trainpipe("serve", "--model", str(tmp_path / "nothing"), "--port", "0")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trainpipe: ") and "nothing is neither a model package" in last
