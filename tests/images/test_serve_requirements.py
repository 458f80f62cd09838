"""The serving image installs trainpipe with --no-deps plus images/serve/requirements.txt.

Two things keep that honest without building anything: every line of the requirements file is
one of pyproject's dependencies (same name, same bounds), and the serve code path, run in a
fresh interpreter that refuses to import the training stack, still starts up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# pyproject dependencies the serving image leaves out on purpose.
TRAINING_STACK = (
    "torch",
    "sklearn",
    "pyarrow",
    "kfp",
    "kubernetes",
    "onnx",
    "onnxscript",
    "matplotlib",
    "tqdm",
    "optuna",
)


def _serve_requirements() -> list[Requirement]:
    lines = (REPO / "images/serve/requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_serve_requirements_are_pyproject_dependencies() -> None:
    with open(REPO / "pyproject.toml", "rb") as f:
        declared = {
            Requirement(r).name: Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]
        }
    for requirement in _serve_requirements():
        assert requirement.name in declared, f"{requirement.name} is not a pyproject dependency"
        assert str(requirement) == str(declared[requirement.name]), (
            f"images/serve/requirements.txt has {requirement}, pyproject "
            f"{declared[requirement.name]}; copy pyproject's line"
        )


def test_serve_path_imports_nothing_from_the_training_stack() -> None:
    blocked = ", ".join(repr(name) for name in TRAINING_STACK)
    program = f"""
import sys
BLOCKED = {{{blocked}}}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the serve path imported {{name}}")

sys.meta_path.insert(0, Refuse())
import trainpipe.cli, trainpipe.serve.__main__, trainpipe.serve.app, trainpipe.serve.repository
try:
    trainpipe.cli.main(["serve", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
"""
    # This checkout's src/ first, whatever trainpipe the running interpreter has installed.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--model" in done.stdout
