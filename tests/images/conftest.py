"""Fixtures for the image tests: buildah, both images built once per session, containers.

The images are really built (scripts/build_images.sh --local-test: buildah with chroot
isolation on a local debootstrap base, the CPU torch wheel) and run with `buildah run`, which
runs a command as the image's USER on the host network. There is no Docker engine or registry
here; see docs/images.md.

Without buildah/debootstrap the tests skip, except under CI=true, where they are installed
with apt-get (CI runs as root on Debian) and a failure to install fails the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A registry name of their own, so the tests never overwrite an image tagged for release.
TEST_REGISTRY = "localhost/trainpipe-test"
TOOLS = ("buildah", "debootstrap")
# One image build (base, train, serve) on 2 cores takes minutes; the tests share it.
BUILD_TIMEOUT_S = 1500

_build_report: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "images: builds and runs the container images with buildah (minutes)"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if _build_report:
        terminalreporter.write_sep("-", "image build times")
        for line in _build_report:
            terminalreporter.write_line(line)


def package_version() -> str:
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def _ensure_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if not os.environ.get("CI"):
        pytest.skip(
            f"{' and '.join(missing)} not installed: apt-get install -y buildah debootstrap "
            "(under CI=true the tests install them)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *TOOLS]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"CI=true and {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


@dataclass(frozen=True)
class BuiltImages:
    train: str
    serve: str
    base: str
    version: str
    build_s: float


@pytest.fixture(scope="session")
def images() -> BuiltImages:
    """Both images, built (or brought up to date from the layer cache) once per session."""
    _ensure_tools()
    version = package_version()
    start = time.monotonic()
    done = subprocess.run(
        ["bash", "scripts/build_images.sh", "--local-test", "--registry", TEST_REGISTRY],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    build_s = time.monotonic() - start
    if done.returncode != 0:
        pytest.fail(
            f"scripts/build_images.sh --local-test failed (exit {done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    steps = [line for line in done.stdout.splitlines() if line.startswith("[build_images]")]
    _build_report.extend([*steps, f"[build_images] total: {build_s:.0f} s"])
    base = next(s.split()[3] for s in steps if s.startswith("[build_images] base image"))
    return BuiltImages(
        train=f"{TEST_REGISTRY}/trainpipe:{version}",
        serve=f"{TEST_REGISTRY}/trainpipe-serve:{version}",
        base=base.rstrip(":"),
        version=version,
        build_s=build_s,
    )


def buildah(*args: str, timeout_s: float = 300) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def inspect_image(image: str) -> dict:
    return json.loads(buildah("inspect", "--type", "image", image))


@dataclass(frozen=True)
class Container:
    """A working container of an image: run commands in it, or read its files from the host."""

    name: str

    def run_args(self, cmd: list[str], volumes: dict[Path, str] | None = None) -> list[str]:
        mounts = [arg for host, ctr in (volumes or {}).items() for arg in ("-v", f"{host}:{ctr}")]
        # Host network (what --isolation chroot gives): a server in it answers on 127.0.0.1.
        return ["buildah", "run", "--isolation", "chroot", *mounts, self.name, "--", *cmd]

    def run(
        self, cmd: list[str], volumes: dict[Path, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.run_args(cmd, volumes), capture_output=True, text=True, timeout=timeout_s
        )

    @contextmanager
    def rootfs(self) -> Iterator[Path]:
        path = Path(buildah("mount", self.name).strip())
        try:
            yield path
        finally:
            buildah("umount", self.name)


@contextmanager
def container(image: str) -> Iterator[Container]:
    name = buildah("from", "--pull=false", "--quiet", image).strip()
    try:
        yield Container(name)
    finally:
        buildah("rm", name)


@contextmanager
def background(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """Start a `buildah run` in its own process group; stop the whole group afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
