"""Shared fixtures: a real S3-protocol server (moto's server mode) on loopback, in its own process.

boto3 talks HTTP to it exactly as it would to AWS or MinIO; nothing in boto3 is patched.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.s3_server"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = server.stdout.readline()
    if not line.startswith("PORT "):
        server.kill()
        raise RuntimeError(f"the moto S3 server did not start (printed {line!r})")
    endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
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
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=10)


_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the loopback S3 server; returns its s3:// URI."""
    import boto3

    name = f"tp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"
