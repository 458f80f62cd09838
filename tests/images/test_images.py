"""The two container images, really built with buildah and run (see conftest.py).

1. the serving image serves a model package made here (mounted read-only): OIP v2 health and an
   inference request from the host, answered by the image's own ENTRYPOINT;
2. the training image runs the validate_data component exactly as a KFP pod would (the
   command and args from the compiled pipeline IR, an executor input like the launcher's)
   and the stage writes its artifacts and manifest.json;
3. both images: non-root uid 10001, tagged with the package version, no compilers, no pip or
   pip cache, none of the build's pip settings or CA secret; no torch in the serving image.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.images.conftest import BuiltImages, background, container, inspect_image

pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_for_container(path: Path) -> None:
    """The container runs as uid 10001; the store writes files 0600 (atomic temp files)."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)


def _tiny_onnx(weight: np.ndarray, bias: np.ndarray) -> bytes:
    """logits = input @ weight + bias, built with onnx.helper (no torch needed)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "weight", "bias"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    # ir_version 9 / opset 17: loadable by every onnxruntime the serve requirements allow.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model.SerializeToString()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serving_image_answers_health_and_inference(images: BuiltImages, tmp_path: Path) -> None:
    from trainpipe.serve.model import TensorSpec, write_model_package
    from trainpipe.storage import open_store

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    store_dir = tmp_path / "store"
    uri = write_model_package(
        open_store(f"file://{store_dir}"),
        "registry/tiny/versions/1",
        _tiny_onnx(weight, bias),
        name="tiny",
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 4))],
        outputs=[TensorSpec("logits", "FP32", (-1, 3))],
        labels=["a", "b", "c"],
    )
    _open_for_container(store_dir)
    model_uri = uri.replace(f"file://{store_dir}", "file:///models")
    port = _free_port()

    entrypoint = inspect_image(images.serve)["OCIv1"]["config"]["Entrypoint"]
    assert entrypoint == ["trainpipe", "serve", "--host", "0.0.0.0", "--port", "8080"]
    with container(images.serve) as ctr:
        # The image's own ENTRYPOINT; a later --port overrides its 8080 (8080 may be taken here).
        args = ctr.run_args(
            [*entrypoint, "--model", model_uri, "--port", str(port)], {store_dir: "/models:ro"}
        )
        log = tmp_path / "server.log"
        with background(args, log) as server:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            status = None
            while time.monotonic() < deadline:
                assert server.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
                try:
                    status, _ = _get(f"{base}/v2/health/ready")
                except OSError:
                    status = None
                if status == 200:
                    break
                time.sleep(0.5)
            assert status == 200, f"not ready after 120 s:\n{log.read_text()[-3000:]}"

            x = rng.normal(size=(2, 4)).astype(np.float32)
            request = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [2, 4],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            req = urllib.request.Request(
                f"{base}/v2/models/tiny/infer",
                data=json.dumps(request).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as response:
                body = json.loads(response.read())
            (logits,) = body["outputs"]
            assert logits["name"] == "logits" and logits["shape"] == [2, 3]
            np.testing.assert_allclose(
                np.array(logits["data"], dtype=np.float32).reshape(2, 3),
                x @ weight + bias,
                rtol=1e-5,
                atol=1e-5,
            )
        # The process group was stopped: nothing listens on the port any more.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the server outlived its container"


def test_training_image_runs_a_pipeline_component(images: BuiltImages, tmp_path: Path) -> None:
    """validate_data as a KFP pod runs it: the IR's command/args, an executor input JSON.

    The image compiles the IR itself (`trainpipe compile`), so the component source, the config
    and the installed package all come from the image.
    """
    import yaml

    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by uid 10001 inside the container
    with container(images.train) as ctr:
        compiled = ctr.run(
            [
                "trainpipe",
                "compile",
                "--output",
                "/out/pipeline.yaml",
                "--set",
                "storage.uri=file:///out/artifacts",
            ],
            {out: "/out"},
        )
        assert compiled.returncode == 0, compiled.stderr[-3000:]
        ir = next(yaml.safe_load_all((out / "pipeline.yaml").read_text()))
        spec = ir["deploymentSpec"]["executors"]["exec-validate-data"]["container"]
        assert spec["image"] == f"ghcr.io/trainpipe/trainpipe:{images.version}"
        config_json = ir["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]

        executor_input = {
            "inputs": {
                "parameterValues": {"config_json": config_json, "run_id": "imgtest", "job_id": ""}
            },
            "outputs": {
                "parameters": {
                    "run_id": {"outputFile": "/out/kfp/outputs/run_id"},
                    "data_uri": {"outputFile": "/out/kfp/outputs/data_uri"},
                },
                "outputFile": "/out/kfp/executor_output.json",
            },
        }
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in spec["args"]]
        done = ctr.run([*spec["command"], *args], {out: "/out"}, timeout_s=600)
    assert done.returncode == 0, f"component failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    stage_dir = out / "artifacts" / "runs" / "imgtest" / "validate_data"
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["stage"] == "validate_data" and manifest["run_id"] == "imgtest"
    assert (stage_dir / "dataset.json").is_file()
    executor_output = json.loads((out / "kfp" / "executor_output.json").read_text())
    data_uri = executor_output["parameterValues"]["data_uri"]
    assert data_uri == "file:///out/artifacts/runs/imgtest/validate_data"


@pytest.mark.parametrize("kind", ["train", "serve"])
def test_image_is_non_root_versioned_and_clean(
    images: BuiltImages, kind: str, tmp_path: Path
) -> None:
    image = getattr(images, kind)
    info = inspect_image(image)
    config = info["OCIv1"]["config"]
    assert image.endswith(f":{images.version}") and not image.endswith(":latest")
    assert config["Labels"]["org.opencontainers.image.version"] == images.version
    assert config["User"] == "10001:10001"
    # No pip setting and no CA secret of the build in the image's config or history.
    leaks = ("PIP_", "pip_ca", "/opt/wheels", "/opt/pypi", "--secret")
    env_and_history = json.dumps([config.get("Env"), info["OCIv1"].get("history")])
    assert not [word for word in leaks if word in env_and_history], env_and_history

    on_path = ("trainpipe", "torchrun", "python3") if kind == "train" else ("trainpipe", "python3")
    with container(image) as ctr:
        probe = ctr.run(
            [
                "sh",
                "-c",
                "id -u; id -g; for c in "
                + " ".join(on_path + COMPILERS)
                + "; do command -v $c >/dev/null && echo has:$c; done; "
                "python3 -c 'import trainpipe; print(trainpipe.__version__)'; "
                "python3 -c 'import importlib.util as u; "
                'print("torch:", u.find_spec("torch") is not None)\'',
            ]
        )
        assert probe.returncode == 0, probe.stderr
        lines = probe.stdout.split()
        assert lines[:2] == ["10001", "10001"], "the image must run as uid/gid 10001"
        present = {line.removeprefix("has:") for line in lines if line.startswith("has:")}
        assert set(on_path) <= present, f"missing on PATH: {set(on_path) - present}"
        assert not present & set(COMPILERS), f"build tools in the image: {present & set(COMPILERS)}"
        assert images.version in lines, "the installed package is not the tagged version"
        assert ("torch: True" in probe.stdout) == (kind == "train")

        with ctr.rootfs() as root:
            _assert_no_build_leftovers(root, images.base)


def _assert_no_build_leftovers(root: Path, base: str) -> None:
    assert not (root / "opt/venv/bin/pip").exists(), "pip is a build tool; the venv keeps none"
    assert not list((root / "opt/venv/lib").glob("python3*/site-packages/pip"))
    for path in ("root/.cache", "home/trainpipe/.cache", "root/.config/pip", "etc/pip.conf"):
        assert not (root / path).exists(), f"/{path} left in the image"
    assert not (root / "run/secrets").exists() or not any((root / "run/secrets").iterdir())
    # The build's CA bundle (a secret mount) must not be anywhere in the image, except where
    # the base image itself has the very same file.
    host_ca = HOST_CA_BUNDLE.read_bytes()
    host_sha, host_size = hashlib.sha256(host_ca).hexdigest(), len(host_ca)
    copies = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or path.stat().st_size != host_size:
                continue
            if hashlib.sha256(path.read_bytes()).hexdigest() == host_sha:
                copies.append("/" + str(path.relative_to(root)))
    if copies:
        with container(base) as base_ctr, base_ctr.rootfs() as base_root:
            in_base = {
                p
                for p in copies
                if (base_root / p.lstrip("/")).is_file()
                and hashlib.sha256((base_root / p.lstrip("/")).read_bytes()).hexdigest() == host_sha
            }
        assert set(copies) == in_base, f"the build's CA bundle was left at {set(copies) - in_base}"
