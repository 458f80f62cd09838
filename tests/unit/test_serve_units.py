"""Server pieces without HTTP: config validation, the error-to-status table, request parsing and
response encoding, and the dynamic batcher with a plain numpy function standing in for the model.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from trainpipe.serve.batcher import DynamicBatcher
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServeError,
    http_status,
)
from trainpipe.serve.model import ModelMetadata
from trainpipe.serve.protocol import encode_infer_response, parse_infer_request

METADATA = ModelMetadata.from_json(
    {
        "name": "m",
        "version": "1",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "b", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "z", "datatype": "INT64", "shape": [-1]},
        ],
        "sha256": "0" * 64,
    },
    "file:///m",
)


def _parse(request: dict | bytes, header_length: str | None = None, **kwargs):
    body = request if isinstance(request, bytes) else orjson.dumps(request)
    options = {"max_batch_size": 4, "allow_non_finite": False, **kwargs}
    return parse_infer_request(body, header_length, METADATA, **options)


def _inputs(rows: int = 2) -> list[dict]:
    return [
        {"name": "a", "datatype": "FP32", "shape": [rows, 2], "data": list(range(rows * 2))},
        {"name": "b", "datatype": "INT64", "shape": [rows], "data": list(range(rows))},
    ]


def test_config_is_frozen_strict_and_validated():
    config = ServeConfig()
    with pytest.raises(ValidationError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        ServeConfig(max_batch=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="host is empty"):
        ServeConfig(host=" ")
    with pytest.raises(ValidationError):
        ServeConfig(max_batch_size=0)


def test_error_statuses_live_in_one_table():
    assert [
        http_status(e("x"))
        for e in (InvalidInput, ModelNotFound, PayloadTooLarge, ModelNotReady, ModelLoadError)
    ] == [400, 404, 413, 503, 500]

    class Narrower(InvalidInput):
        pass

    assert http_status(Narrower("x")) == 400
    assert http_status(ServeError("x")) == 500


def test_parse_json_nested_and_flat_data():
    request = {"id": 7, "inputs": _inputs()}
    request["inputs"][0]["data"] = [[0, 1], [2, 3]]
    parsed = _parse(request)
    assert parsed.id == "7" and parsed.rows == 2
    np.testing.assert_array_equal(parsed.feeds["a"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert parsed.feeds["b"].dtype == np.int64
    assert parsed.outputs == (("y", False), ("z", False))


def test_parse_binary_extension_with_two_tensors():
    a = np.arange(4, dtype="<f4").reshape(2, 2)
    b = np.array([5, 6], dtype="<i8")
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 2]}
                | {"parameters": {"binary_data_size": 16}},
                {"name": "b", "datatype": "INT64", "shape": [2]}
                | {"parameters": {"binary_data_size": 16}},
            ],
            "outputs": [{"name": "z", "parameters": {"binary_data": True}}, {"name": "y"}],
        }
    )
    parsed = _parse(header + a.tobytes() + b.tobytes(), str(len(header)))
    np.testing.assert_array_equal(parsed.feeds["a"], a)
    np.testing.assert_array_equal(parsed.feeds["b"], b)
    assert parsed.outputs == (("z", True), ("y", False))

    body, header_length = encode_infer_response(
        METADATA, parsed, [np.ones((2, 2), np.float32), np.array([1, 2], np.int64)]
    )
    head = orjson.loads(body[:header_length])
    assert head["outputs"][0] == {
        "name": "z",
        "datatype": "INT64",
        "shape": [2],
        "parameters": {"binary_data_size": 16},
    }
    assert head["outputs"][1]["data"] == [1.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<i8"), [1, 2])


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["inputs"].pop(), "missing input(s) ['b']"),
        (lambda r: r["inputs"].append(dict(r["inputs"][0])), "given twice"),
        (lambda r: r["inputs"][1].update(shape=[3], data=[1, 2, 3]), "disagree on the batch"),
        (lambda r: r["inputs"][0].update(shape="2x2"), "needs 'shape'"),
        (lambda r: r["inputs"][0].update(shape=[0, 2], data=[]), "batch size 0"),
        (lambda r: r["inputs"][0].pop("data"), "no 'data' list"),
        (
            lambda r: r["inputs"][0].update(data=["x"] * 4),
            "data holds strings, but datatype FP32 takes only numbers",
        ),
        (lambda r: r.update(parameters=[1]), "'parameters' of the request"),
        (lambda r: r.update(outputs={"name": "y"}), "'outputs' must be a list"),
    ],
)
def test_parse_refuses_with_a_precise_message(mutate, fragment):
    request = {"inputs": _inputs()}
    mutate(request)
    with pytest.raises(InvalidInput) as caught:
        _parse(request)
    assert fragment in str(caught.value)


def test_non_finite_follows_the_config():
    request = {"inputs": _inputs()}
    body = orjson.dumps(request).replace(b'"data":[0,1,2,3]', b'"data":[0,NaN,2,-Infinity]')
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        _parse(body)
    assert np.isnan(_parse(body, allow_non_finite=True).feeds["a"][0, 1])


def test_binary_section_must_be_fully_claimed():
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                {"name": "b", "datatype": "INT64", "shape": [1], "data": [1]},
            ]
        }
    )
    with pytest.raises(InvalidInput, match="4 bytes that no input claims"):
        _parse(header + b"\0" * 4, str(len(header)))
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        _parse(header, "-1")


TABLE = ModelMetadata.from_json(
    {
        "name": "t",
        "version": "1",
        "inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [-1]},
            {"name": "size", "datatype": "FP32", "shape": [-1], "allow_missing": True},
        ],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "sha256": "0" * 64,
    },
    "file:///t",
)


def _parse_table(body: bytes, header_length: str | None = None):
    return parse_infer_request(body, header_length, TABLE, max_batch_size=4, allow_non_finite=False)


def test_bytes_inputs_json_and_binary_and_missing_numbers():
    request = {
        "inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [3], "data": ["oslo", None, "ålesund"]},
            {"name": "size", "datatype": "FP32", "shape": [3], "data": [1.5, None, 3.0]},
        ]
    }
    parsed = _parse_table(orjson.dumps(request))
    assert parsed.feeds["city"].tolist() == ["oslo", "", "ålesund"]
    assert np.isnan(parsed.feeds["size"][1]) and parsed.feeds["size"][2] == 3.0
    strings = b"".join(len(v).to_bytes(4, "little") + v for v in (b"oslo", "ålesund".encode()))
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "city", "datatype": "BYTES", "shape": [2]}
                | {"parameters": {"binary_data_size": len(strings)}},
                {"name": "size", "datatype": "FP32", "shape": [2], "data": [1, 2]},
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    )
    parsed = _parse_table(header + strings, str(len(header)))
    assert parsed.feeds["city"].tolist() == ["oslo", "ålesund"]
    body, length = encode_infer_response(TABLE, parsed, [np.array(["yes", "nö"], dtype=object)])
    assert orjson.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"] == 14
    assert body[length:] == b"\x03\0\0\0yes" + b"\x03\0\0\0" + "nö".encode()
    json_body, _ = encode_infer_response(
        TABLE, _parse_table(orjson.dumps(request)), [np.array(["a", "b", "c"], dtype=object)]
    )
    assert orjson.loads(json_body)["outputs"][0]["data"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"city": [1, 2]}, "BYTES but its data holds non-strings"),
        ({"size": [1.0, float("inf")]}, "contains infinity"),
        ({"city": ["a"]}, "has 1 values but its shape needs 2"),
    ],
)
def test_bytes_and_missing_refusals(data, fragment):
    inputs = {"city": ["a", "b"], "size": [1.0, 2.0]} | data
    request = {
        "inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [2], "data": inputs["city"]},
            {"name": "size", "datatype": "FP32", "shape": [2], "data": inputs["size"]},
        ]
    }
    body = (
        orjson.dumps(request)
        if "size" not in data
        else orjson.dumps(request).replace(b"null", b"Infinity")
    )
    with pytest.raises(InvalidInput, match=fragment):
        _parse_table(body)


def _run_batches(batcher: DynamicBatcher, sizes: list[int]) -> list[list[np.ndarray]]:
    async def main() -> list[list[np.ndarray]]:
        for _ in sizes:
            batcher.announce()
        jobs = [
            batcher.infer({"x": np.full((rows, 1), i, np.float32)}, rows)
            for i, rows in enumerate(sizes)
        ]
        return await asyncio.gather(*jobs)

    return asyncio.run(main())


def test_batcher_merges_concurrent_jobs_and_splits_results():
    calls: list[int] = []
    gate = threading.Event()

    def run(feeds):
        gate.wait(5)
        calls.append(len(feeds["x"]))
        return [feeds["x"] * 10]

    batcher = DynamicBatcher(run, max_batch_size=4, max_batch_delay_s=1.0)
    gate.set()
    results = _run_batches(batcher, [1, 2, 1, 3])
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out, np.full((out.shape[0], 1), i * 10, np.float32))
    assert [len(out) for (out,) in results] == [1, 2, 1, 3]
    # 1+2+1 fill a batch of 4; the 3-row job does not fit and runs next.
    assert calls == [4, 3]
    batcher.close()
    batcher.join(5)


def test_batcher_does_not_wait_when_nothing_else_is_in_flight():
    batcher = DynamicBatcher(lambda f: [f["x"]], max_batch_size=8, max_batch_delay_s=5.0)

    async def one() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.infer({"x": np.zeros((1, 1), np.float32)}, 1, announced=False)
        return loop.time() - started

    assert asyncio.run(one()) < 1.0
    batcher.close()
    batcher.join(5)


def test_batcher_delivers_model_errors_to_every_job_in_the_batch():
    def fail(feeds):
        raise RuntimeError("boom")

    batcher = DynamicBatcher(fail, max_batch_size=8, max_batch_delay_s=0.01)

    async def main():
        batcher.announce()
        batcher.announce()
        jobs = [batcher.infer({"x": np.zeros((1, 1), np.float32)}, 1) for _ in range(2)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    assert [str(e) for e in asyncio.run(main())] == ["boom", "boom"]
    batcher.close()
    batcher.join(5)


def test_docs_curl_example_sends_pixels_on_the_training_scale():
    """docs/serving.md's request is digit 0 of scikit-learn's set scaled to 0-1, as trained."""
    import json
    import re
    from pathlib import Path

    from sklearn.datasets import load_digits

    from trainpipe.data.datasets import DIGITS_PIXEL_MAX

    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    body = re.search(r"-d '(\{.*?\})'", doc, re.S).group(1)
    data = np.array(json.loads(body)["inputs"][0]["data"])
    assert data.max() <= 1.0
    assert np.allclose(data, load_digits().images[0].ravel() / DIGITS_PIXEL_MAX)
