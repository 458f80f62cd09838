"""The command line: help for every command, exit codes, one-line errors."""

from __future__ import annotations

import argparse
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


def _subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    """Every (name, parser) below ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{prefix}{name}", child
                yield from _subcommands(child, f"{prefix}{name} ")


def test_every_option_says_what_it_does_and_its_default_with_an_example():
    from trainpipe.cli import build_parser
    from trainpipe.data.validation.cli import build_parser as validate_parser

    commands = dict(_subcommands(build_parser()))
    commands["validate"] = validate_parser()  # main() hands validate to its own parser
    assert {"run", "compile", "serve", "registry list", "registry promote", "submit"} <= set(
        commands
    )
    for name, parser in commands.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # a group (registry): its actions carry the options
        assert "example:" in (parser.epilog or ""), f"{name}: no example"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help or ""
            assert ("default" in text or action.required) and len(text) > 15, (
                f"{name} {action.option_strings[0]}: {text!r}"
            )


def test_help_has_no_markup_and_registry_list_has_its_own_help():
    top = trainpipe("--help").stdout
    assert "``" not in top and "example:" in top
    listing = trainpipe("registry", "list", "--help").stdout
    assert listing.startswith("usage: trainpipe registry list")
    assert "every model in the store" in listing and "--output DIR" in listing
    assert trainpipe("registry", "--help").stdout != listing


def test_readme_command_section_matches_the_parsers():
    """Every command the help lists is in the README, and every option the README shows for a
    command is one its parser accepts."""
    import re
    from pathlib import Path

    from trainpipe.cli import build_parser
    from trainpipe.data.validation.cli import build_parser as validate_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    commands = dict(_subcommands(build_parser()))
    commands["validate"] = validate_parser()
    shown = set()
    for line in block.splitlines():
        words = line.split()
        if words[:1] != ["trainpipe"]:
            continue
        name = " ".join(words[1:3]) if f"{words[1]} {words[2]}" in commands else words[1]
        shown.add(name)
        accepted = {o for a in commands[name]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert option in accepted, f"README: `trainpipe {name} {option}` is not an option"
    leaves = {
        n
        for n, p in commands.items()
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    }
    assert leaves <= shown, f"missing from the README: {sorted(leaves - shown)}"


def test_compile_warns_about_local_paths_and_strict_refuses(tmp_path):
    out = tmp_path / "pipeline.yaml"
    local = ("--set", f"data.source={tmp_path}/train.parquet", "--set", "storage.uri=s3://b/p")
    done = trainpipe("compile", "--output", str(out), *local)
    assert done.returncode == 0 and out.exists()
    assert done.stderr.strip().splitlines() == [
        f"warning: data.source '{tmp_path}/train.parquet' is a local path, which no cluster pod "
        "can read; set an s3:// URI before submitting (--strict refuses)"
    ]
    out.unlink()
    strict = trainpipe("compile", "--output", str(out), "--strict", *local)
    assert strict.returncode == 2 and not out.exists()
    assert strict.stderr.strip().splitlines() == [
        f"trainpipe: usage error: data.source '{tmp_path}/train.parquet' is a local path, which "
        "no cluster pod can read; use s3:// URIs (or drop --strict to compile anyway)"
    ]
    remote = ("--set", "data.source=s3://b/d.parquet", "--set", "storage.uri=s3://b/p")
    clean = trainpipe("compile", "--output", str(out), "--strict", *remote)
    assert clean.returncode == 0 and clean.stderr == ""
