"""Fixtures for the chart and manifest tests: the real helm binary and kubernetes-validate.

Both come from `scripts/install_tools.sh` (helm into .tools/bin, kubernetes-validate via pip).
Without them the tests skip with the install command as the reason, except under CI (env CI set
to anything but "", "0" or "false"), where a missing tool is a failure: CI must never pass by
skipping.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainpipe"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "trainpipe", "trainpipe"
INSTALL_HINT = "run scripts/install_tools.sh"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def _missing(what: str) -> None:
    message = f"{what} not found; {INSTALL_HINT}"
    if _in_ci():
        pytest.fail(f"{message} (CI is set, so a missing tool fails instead of skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary installed by scripts/install_tools.sh."""
    path = ROOT / ".tools" / "bin" / "helm"
    if not os.access(path, os.X_OK):
        _missing(f"helm at {path.relative_to(ROOT)}")
    return path


@pytest.fixture(scope="session")
def kubernetes_validate() -> ModuleType:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("the kubernetes-validate package")
    return kubernetes_validate


@pytest.fixture(scope="session")
def k8s_versions(kubernetes_validate: ModuleType) -> list[str]:
    """The oldest Kubernetes version the project supports and the newest the validator knows."""
    newest = kubernetes_validate.latest_version()
    return sorted({"1.30.0", newest}, key=lambda v: tuple(int(x) for x in v.split(".")))


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., list[dict[str, Any]]]:
    """render(scenario, *extra_args) -> the manifests `helm template` prints, cached per call."""
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(scenario: str, *extra: str) -> list[dict[str, Any]]:
        key = (scenario, *extra)
        if key not in cache:
            result = run_helm(
                helm,
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                "--values",
                str(CHART / "ci" / scenario),
                *extra,
            )
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[key]

    return _render
