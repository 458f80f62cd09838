"""Shared fixtures: a real S3-protocol server (moto's server mode) on loopback, in its own process.

boto3 talks HTTP to it exactly as it would to AWS or MinIO; nothing in boto3 is patched.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import trainpipe


def _import_from_this_checkout() -> None:
    """Import trainpipe.components / trainpipe.pipelines from this checkout's folders.

    An editable install maps them to the checkout it was installed from; a second git worktree
    that shares that virtualenv (with its src/ first on PYTHONPATH) would otherwise test the
    other checkout's DAG. In a plain checkout both locations are the same.
    """
    root = Path(__file__).resolve().parent.parent
    for name in ("components", "pipelines"):
        folder = root / name
        spec = importlib.util.spec_from_file_location(
            f"trainpipe.{name}", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(trainpipe, name, module)


_import_from_this_checkout()


class S3Server:
    """moto's S3 server in its own process, restarted on the same port if it has died.

    One server serves the whole session. Once in a few full runs on a loaded machine it has
    gone away mid-session (every later S3 test then failed with "connection refused"), and its
    output went nowhere, so the cause was lost. Now its log is kept (``log``), and a test that
    finds it dead gets a fresh one on the same port (each test makes its own bucket, so none
    depends on the old one's contents), with a warning carrying the dead server's last log lines.
    """

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.s3_server", str(self.port)],
                cwd=Path(__file__).resolve().parent.parent,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(
                f"the moto S3 server did not start (printed {line!r}; log: {self.log})"
            )
        self.port = int(line.split()[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ensure_running(self) -> None:
        if self.process.poll() is None:
            return
        status = self.process.returncode
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        warnings.warn(
            f"the moto S3 server had exited (status {status}); restarted on port {self.port}. "
            f"Its last log lines:\n{tail}",
            stacklevel=1,
        )
        self.start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3-server") / "server.log")
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    # The endpoint is NOT exported (AWS_ENDPOINT_URL): users set it in config, so tests pass
    # it the same way and a code path that drops it fails here instead of reaching AWS.
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(
        {
            # moto accepts any credentials; these are test values, not secrets.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_endpoint(s3_server: S3Server) -> str:
    """The loopback S3 server's endpoint URL (the server is alive when the test starts)."""
    s3_server.ensure_running()
    return s3_server.endpoint


_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the loopback S3 server; returns its s3:// URI."""
    import boto3

    name = f"tp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"
