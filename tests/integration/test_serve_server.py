"""The OIP v2 server end to end: a real uvicorn server on loopback, real HTTP clients (httpx,
tritonclient.http, the package's urllib client), real ONNX Runtime on a tiny torch model exported
with torch.onnx.export inside the test, model packages written through ArtifactWriter on
file:// and on a real S3 protocol server (moto, in its own process).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch

from trainpipe.artifacts import ArtifactWriter
from trainpipe.serve import ServeConfig, client, start_in_background
from trainpipe.serve.errors import ModelLoadError
from trainpipe.serve.model import TensorSpec, write_model_package
from trainpipe.serve.server import ModelServer, start_http_in_background
from trainpipe.storage import open_store, sha256_bytes

MODEL = "digits-classifier"
INPUTS = [TensorSpec("input", "FP32", (-1, 1, 8, 8))]
OUTPUTS = [TensorSpec("logits", "FP32", (-1, 10))]
LABELS = [str(i) for i in range(10)]
MAX_BATCH = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[bytes, torch.nn.Module]:
    """A 64->32->10 MLP exported with a dynamic batch axis as one self-contained ONNX file."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    ).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (torch.zeros(2, 1, 8, 8),),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        opset_version=18,
        verbose=False,
    )
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    program.save(str(path), external_data=False)
    return path.read_bytes(), model


def _package(
    store_uri: str, prefix: str, model_bytes: bytes, version: str, endpoint_url: str | None = None
) -> str:
    return write_model_package(
        open_store(store_uri, endpoint_url=endpoint_url),
        prefix,
        model_bytes,
        name=MODEL,
        version=version,
        inputs=INPUTS,
        outputs=OUTPUTS,
        labels=LABELS,
        opset=18,
    )


def _config(**overrides) -> ServeConfig:
    base = {"port": 0, "log_level": "warning", "max_batch_size": MAX_BATCH}
    return ServeConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def package_uri(exported, tmp_path_factory) -> str:
    return _package(f"file://{tmp_path_factory.mktemp('store')}", "pkg", exported[0], "3")


@pytest.fixture(scope="module")
def server(package_uri) -> Iterator[str]:
    with start_in_background(package_uri, _config(max_body_bytes=64 * 1024)) as running:
        yield running.url


def _expected(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32)


def _infer_body(x: np.ndarray, **tensor_overrides) -> bytes:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel()}
    tensor.update(tensor_overrides)
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


def _metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


# -- endpoints -----------------------------------------------------------------------------------


def test_health_and_metadata_endpoints(server):
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server}/v2").json()
    assert meta["name"] == "trainpipe" and "binary_tensor_data" in meta["extensions"]
    model = httpx.get(f"{server}/v2/models/{MODEL}").json()
    assert model["name"] == MODEL and model["versions"] == ["3"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert model["parameters"]["labels"] == LABELS
    assert httpx.get(f"{server}/v2/models/{MODEL}/versions/3").json() == model
    assert httpx.get(f"{server}/v2/models/{MODEL}/ready").json()["ready"] is True
    assert httpx.get(f"{server}/v2/models/{MODEL}/versions/3/ready").status_code == 200
    assert "trainpipe_serve_model_loaded" in httpx.get(f"{server}/metrics").text


def test_json_inference_matches_torch_on_both_paths(server, exported):
    x = _images(3)
    for path in (f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/3/infer"):
        response = httpx.post(server + path, content=_infer_body(x)[:-1] + b',"id":"r1"}')
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == MODEL and body["model_version"] == "3" and body["id"] == "r1"
        (output,) = body["outputs"]
        assert output["name"] == "logits" and output["shape"] == [3, 10]
        logits = np.asarray(output["data"], np.float32).reshape(3, 10)
        np.testing.assert_allclose(logits, _expected(exported[1], x), rtol=1e-4, atol=1e-5)


def test_package_client_helper(server, exported):
    client.wait_ready(server, timeout_s=5)
    x = _images(2, seed=1)
    np.testing.assert_allclose(
        client.infer(server, MODEL, x), _expected(exported[1], x), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(client.InferenceClientError, match="404"):
        client.infer(server, "nope", x, input_name="input")


def test_tritonclient_json_and_binary(server, exported):
    tritonclient_http = pytest.importorskip("tritonclient.http")
    triton = tritonclient_http.InferenceServerClient(server.removeprefix("http://"))
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.get_model_metadata(MODEL)["versions"] == ["3"]
    x = _images(4, seed=2)
    expected = _expected(exported[1], x)
    for binary in (False, True):
        tensor = tritonclient_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        requested = [tritonclient_http.InferRequestedOutput("logits", binary_data=binary)]
        result = triton.infer(MODEL, [tensor], outputs=requested, model_version="3")
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-5)
    # No outputs named: tritonclient asks for binary outputs with binary_data_output.
    result = triton.infer(MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-5)
    triton.close()


# -- bad requests --------------------------------------------------------------------------------


def _binary_request(x: np.ndarray, claimed_bytes: int | None = None) -> tuple[bytes, dict]:
    raw = x.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": claimed_bytes or len(raw)},
                }
            ]
        }
    )
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


_GOOD = _images(1, seed=5)
_BAD_REQUESTS = {
    "malformed json": (400, b'{"inputs": [', {}, "not valid JSON"),
    "not an object": (400, b"[1, 2]", {}, "JSON object"),
    "missing input": (400, b'{"inputs": []}', {}, "non-empty 'inputs'"),
    "unknown input": (400, _infer_body(_GOOD, name="pixels"), {}, "unknown input 'pixels'"),
    "extra input": (
        400,
        orjson.dumps(
            {
                "inputs": [
                    orjson.loads(_infer_body(_GOOD))["inputs"][0],
                    {"name": "mask", "shape": [1], "datatype": "FP32", "data": [1]},
                ]
            }
        ),
        {},
        "unknown input 'mask'",
    ),
    "wrong datatype": (400, _infer_body(_GOOD, datatype="FP64"), {}, "expects FP32"),
    "wrong shape": (400, _infer_body(_GOOD, shape=[1, 64]), {}, "expects ['N', 1, 8, 8]"),
    "data length": (400, _infer_body(_GOOD, data=[0.5] * 63), {}, "has 63 values"),
    "ragged data": (400, _infer_body(_GOOD, data=[[0.5], [0.5, 1.0]]), {}, "cannot be read"),
    "nan json": (
        400,
        b'{"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":['
        + b"NaN," * 63
        + b"Infinity]}]}",
        {},
        "NaN or infinity",
    ),
    "inf binary": (400, *_binary_request(np.full((1, 1, 8, 8), np.inf, np.float32)), "NaN"),
    "binary size": (400, *_binary_request(_GOOD, claimed_bytes=128), "binary_data_size 128"),
    "header length": (400, _infer_body(_GOOD), {"Inference-Header-Content-Length": "9999"}, "9999"),
    "batch over limit": (400, _infer_body(_images(MAX_BATCH + 1)), {}, "max_batch_size 8"),
    "body too large": (413, b" " * (65 * 1024), {}, "max_body_bytes"),
    "unknown output": (
        400,
        _infer_body(_GOOD)[:-1] + b',"outputs":[{"name":"probs"}]}',
        {},
        "unknown output 'probs'",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_REQUESTS))
def test_bad_request_gets_4xx_json_and_server_keeps_serving(server, case):
    status, body, headers, fragment = _BAD_REQUESTS[case]
    errors_before = _metric(server, "trainpipe_serve_errors_total", model=MODEL)
    response = httpx.post(f"{server}/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert _metric(server, "trainpipe_serve_errors_total", model=MODEL) == errors_before + 1
    good = httpx.post(f"{server}/v2/models/{MODEL}/infer", content=_infer_body(_GOOD))
    assert good.status_code == 200


def test_unknown_model_version_and_route_are_404(server):
    x = _infer_body(_GOOD)
    for path in ("/v2/models/other/infer", f"/v2/models/{MODEL}/versions/7/infer"):
        response = httpx.post(server + path, content=x)
        assert response.status_code == 404 and "serves" in response.json()["error"]
    assert httpx.get(f"{server}/v2/models/{MODEL}/versions/7").status_code == 404
    assert httpx.get(f"{server}/v2/models/other/ready").status_code == 404
    response = httpx.get(f"{server}/v1/models")
    assert response.status_code == 404 and "/v2" in response.json()["error"]
    assert httpx.get(f"{server}/v2/health/live").status_code == 200


def test_non_finite_inputs_accepted_when_configured(package_uri):
    with start_in_background(package_uri, _config(allow_non_finite=True)) as running:
        body, headers = _binary_request(np.full((1, 1, 8, 8), np.nan, np.float32))
        response = httpx.post(
            f"{running.url}/v2/models/{MODEL}/infer", content=body, headers=headers
        )
        assert response.status_code == 200, response.text


# -- batching, readiness, integrity ------------------------------------------------------------


def test_concurrent_requests_are_merged_into_batches(package_uri, exported):
    clients = 16
    config = _config(max_batch_size=64, max_batch_delay_ms=50)
    with start_in_background(package_uri, config) as running:
        url = f"{running.url}/v2/models/{MODEL}/infer"
        inputs = [_images(1, seed=i) for i in range(clients)]
        results: list[np.ndarray | None] = [None] * clients
        barrier = threading.Barrier(clients)

        def call(i: int) -> None:
            with httpx.Client() as http:
                http.get(f"{running.url}/v2/health/live")  # connect before the barrier
                barrier.wait()
                body = http.post(url, content=_infer_body(inputs[i])).json()
                results[i] = np.asarray(body["outputs"][0]["data"], np.float32).reshape(1, 10)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for x, got in zip(inputs, results, strict=True):
            np.testing.assert_allclose(got, _expected(exported[1], x), rtol=1e-4, atol=1e-5)
        rows = _metric(running.url, "trainpipe_serve_batch_size_sum", model=MODEL)
        calls = _metric(running.url, "trainpipe_serve_batch_size_count", model=MODEL)
        assert rows == clients
        assert calls < clients, f"{clients} concurrent requests took {calls} model calls"


@pytest.mark.parametrize("inline_run_max_ms", [1.0, 0.0], ids=["on-the-loop", "in-the-worker"])
def test_lone_requests_are_not_delayed_by_a_long_batch_window(package_uri, inline_run_max_ms):
    config = _config(max_batch_delay_ms=3000, inline_run_max_ms=inline_run_max_ms)
    with start_in_background(package_uri, config) as running, httpx.Client() as http:
        http.get(f"{running.url}/v2/health/live")  # connected: only the requests are timed
        seconds = []
        for i in range(10):
            started = time.perf_counter()
            response = http.post(
                f"{running.url}/v2/models/{MODEL}/infer", content=_infer_body(_images(1, seed=i))
            )
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    assert max(seconds) < 1.0, f"a lone request took {max(seconds):.2f} s (window 3 s)"


def test_ready_only_after_model_is_loaded(package_uri):
    model_server = ModelServer(package_uri, _config())
    running = start_http_in_background(model_server)
    try:
        url = running.url
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{url}/v2/models/{MODEL}/ready").status_code == 503
        response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=_infer_body(_GOOD))
        assert response.status_code == 503 and "no model is loaded yet" in response.json()["error"]
        model_server.load()
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=_infer_body(_GOOD))
        assert response.status_code == 200
    finally:
        running.stop()


def _tampered_packages(tmp_path: Path, model_bytes: bytes) -> dict[str, str]:
    store_uri = f"file://{tmp_path}/store"
    # model.json records a sha256 that is not model.onnx's (the manifest itself is consistent).
    writer = ArtifactWriter(open_store(store_uri), "wrong-sha", stage="export", run_id="t")
    writer.put_bytes("model.onnx", model_bytes)
    spec = {"name": MODEL, "version": "4", "sha256": sha256_bytes(b"other")}
    writer.put_json("model.json", {**spec, "inputs": [INPUTS[0].to_json()], "outputs": []})
    wrong_sha = writer.commit()
    # model.onnx changed on disk after the package was committed.
    flipped = _package(store_uri, "flipped", model_bytes, "4")
    onnx_path = tmp_path / "store" / "flipped" / "model.onnx"
    onnx_path.write_bytes(model_bytes[:-1] + bytes([model_bytes[-1] ^ 1]))
    return {"wrong-sha": wrong_sha, "flipped": flipped}


@pytest.mark.parametrize("kind", ["wrong-sha", "flipped"])
def test_tampered_package_is_refused(tmp_path, exported, kind):
    uri = _tampered_packages(tmp_path, exported[0])[kind]
    with pytest.raises(ModelLoadError, match="sha256"):
        start_in_background(uri, _config())


def test_model_from_s3(s3_bucket, s3_endpoint, exported):
    prefix = "registry/digits-classifier/versions/3"
    uri = _package(s3_bucket, prefix, exported[0], "3", s3_endpoint)
    with start_in_background(uri, _config(endpoint_url=s3_endpoint)) as running:
        x = _images(2, seed=3)
        np.testing.assert_allclose(
            client.infer(running.url, MODEL, x), _expected(exported[1], x), rtol=1e-4, atol=1e-5
        )


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_follows_champion_switches_and_refuses_corrupt_version(tmp_path, exported):
    store_uri = f"file://{tmp_path}/store"
    store = open_store(store_uri)
    registry = f"registry/{MODEL}"
    v2 = _package(store_uri, f"{registry}/versions/2", exported[0], "2")
    v3 = _package(store_uri, f"{registry}/versions/3", exported[0], "3")
    bad = _tampered_packages(tmp_path, exported[0])["flipped"]

    def promote(version: str, uri: str) -> None:
        pointer = {"model": MODEL, "version": version, "uri": uri, "updated_at": "now"}
        store.put_json(f"{registry}/champion.json", pointer)

    promote("2", v2)
    config = _config(poll_interval_s=0.05)
    with start_in_background(store.uri_for(registry), config) as running:
        url = running.url
        versions_seen: set[str] = set()
        failures: list[str] = []
        stop = threading.Event()

        def keep_inferring() -> None:
            with httpx.Client() as http:
                while not stop.is_set():
                    r = http.post(f"{url}/v2/models/{MODEL}/infer", content=_infer_body(_GOOD))
                    if r.status_code == 200:
                        versions_seen.add(r.json()["model_version"])
                    else:
                        failures.append(r.text)

        load = threading.Thread(target=keep_inferring)
        load.start()
        try:
            assert httpx.get(f"{url}/v2/models/{MODEL}").json()["versions"] == ["2"]
            promote("3", v3)
            _wait_for(lambda: httpx.get(f"{url}/v2/models/{MODEL}").json()["versions"] == ["3"])
            _wait_for(lambda: "3" in versions_seen)
            promote("4", bad)
            _wait_for(
                lambda: _metric(url, "trainpipe_serve_model_loads_total", outcome="refused") == 1
            )
            assert httpx.get(f"{url}/v2/models/{MODEL}").json()["versions"] == ["3"]
            assert httpx.get(f"{url}/v2/health/ready").status_code == 200
            time.sleep(0.3)  # later polls do not retry the refused version
            assert _metric(url, "trainpipe_serve_model_loads_total", outcome="refused") == 1
        finally:
            stop.set()
            load.join(10)
        assert failures == []
        assert versions_seen == {"2", "3"}
        assert _metric(url, "trainpipe_serve_model_loaded", version="3") == 1
        assert _metric(url, "trainpipe_serve_model_loaded", version="2") == 0


def test_module_entry_point(package_uri, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "trainpipe.serve", "--model", package_uri, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("trainpipe serve: ") and " on http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        client.wait_ready(url, timeout_s=30)
        assert client.infer(url, MODEL, _GOOD).shape == (1, 10)
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)

    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainpipe.serve",
            "--model",
            f"file://{tmp_path}/none",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "neither a model package" in last


def test_serve_command_takes_the_s3_endpoint(s3_bucket, s3_endpoint, exported):
    """`trainpipe serve --endpoint-url`: the endpoint is not in the environment (the suite does
    not export AWS_ENDPOINT_URL), so the model is reachable only through the option."""
    uri = _package(s3_bucket, "pkg", exported[0], "3", s3_endpoint)
    argv = [sys.executable, "-m", "trainpipe", "serve", "--model", uri, "--port", "0"]
    process = subprocess.Popen(
        [*argv, "--endpoint-url", s3_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        client.wait_ready(url, timeout_s=30)
        assert client.infer(url, MODEL, _GOOD).shape == (1, 10)
    finally:
        process.terminate()
        process.wait(timeout=15)


# -- what --model names ----------------------------------------------------------------------------


def test_serves_a_single_onnx_file_a_package_file_and_says_which(tmp_path, exported, package_uri):
    """`--model path/model.onnx`: a bare file (name from the stem, graph signature), the same
    file with a model.json beside it, or the model.onnx inside a package (served as the package).
    """
    model_bytes, model = exported
    bare = tmp_path / "bare" / "mnist-small.onnx"
    bare.parent.mkdir()
    bare.write_bytes(model_bytes)
    x = _images(3)
    with start_in_background(str(bare), _config()) as running:
        assert running.model_server.repository.describe() == "the single ONNX file"
        meta = httpx.get(f"{running.url}/v2/models/mnist-small").json()
        assert meta["versions"] == ["1"] and meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        logits = client.infer(running.url, "mnist-small", x)
        np.testing.assert_allclose(logits, _expected(model, x), rtol=1e-4, atol=1e-5)

    described = tmp_path / "described"
    described.mkdir()
    (described / "model.onnx").write_bytes(model_bytes)
    metadata = {
        "name": MODEL,
        "version": "7",
        "inputs": [s.to_json() for s in INPUTS],
        "outputs": [s.to_json() for s in OUTPUTS],
        "labels": LABELS,
        "sha256": sha256_bytes(model_bytes),
    }
    (described / "model.json").write_text(orjson.dumps(metadata).decode())
    with start_in_background(str(described / "model.onnx"), _config()) as running:
        assert httpx.get(f"{running.url}/v2/models/{MODEL}").json()["versions"] == ["7"]

    inside = package_uri.removeprefix("file://") + "/model.onnx"
    with start_in_background(inside, _config()) as running:
        assert running.model_server.repository.describe() == "the model package holding"
        assert httpx.get(f"{running.url}/v2/models/{MODEL}").json()["versions"] == ["3"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.onnx", "missing.onnx does not exist; pass an existing .onnx"),
        (lambda d: d / "notes.txt", "notes.txt is neither a model package"),
    ],
)
def test_a_bad_model_path_is_one_line(tmp_path, make, message):
    (tmp_path / "notes.txt").write_text("not a model")
    target = make(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "trainpipe", "serve", "--model", str(target), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainpipe: ") and message in lines[0]


def test_serve_output_serves_the_champion_of_the_store(tmp_path, exported):
    """`trainpipe serve --output STORE`: the option `run` takes; no --model needed."""
    from trainpipe.registry import Registry

    registry = Registry(open_store(str(tmp_path / "store")), MODEL)
    metadata = {
        "name": MODEL,
        "version": "",
        "inputs": [s.to_json() for s in INPUTS],
        "outputs": [s.to_json() for s in OUTPUTS],
        "sha256": sha256_bytes(exported[0]),
    }
    files = {"model.onnx": exported[0], "model.json": orjson.dumps(metadata)}
    registry.promote(registry.register(files, run_id="r1", lineage={}, summary={}), reason="t")
    command = ["serve", "--output", str(tmp_path / "store"), "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "trainpipe", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith(
            f"trainpipe serve: the champion of registry model {tmp_path}/store/registry/{MODEL} on "
        ), first
        url = first.split(" on ", 1)[1].split()[0]
        client.wait_ready(url, timeout_s=60)
        assert httpx.get(f"{url}/v2/models/{MODEL}").json()["versions"] == ["1"]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
