"""Server pieces without HTTP: config validation, the error-to-status table, request parsing and
response encoding, and the dynamic batcher with a plain numpy function standing in for the model.
"""

from __future__ import annotations

import asyncio
import threading
import time

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


class _Model:
    """A stand-in model that records, per call, the thread that ran it and its rows."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.calls: list[tuple[int, int]] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.calls.append((threading.get_ident(), len(feeds["x"])))
        return [feeds["x"] * 2]


async def _request(batcher: DynamicBatcher, value: float) -> tuple[np.ndarray, float]:
    """What the app's handler does: announce, then infer; returns (output, seconds taken)."""
    started = time.perf_counter()
    batcher.announce()
    (out,) = await batcher.infer({"x": np.full((1, 1), value, np.float32)}, 1)
    return out, time.perf_counter() - started


def _sequential(batcher: DynamicBatcher, count: int) -> list[float]:
    async def main() -> list[float]:
        seconds = []
        for i in range(count):
            out, took = await _request(batcher, i)
            np.testing.assert_array_equal(out, [[2.0 * i]])
            seconds.append(took)
        return seconds

    try:
        return asyncio.run(main())
    finally:
        batcher.close()
        batcher.join(5)


@pytest.mark.parametrize("inline_run_max_s", [1.0, 0.0], ids=["on-the-loop", "in-the-worker"])
def test_lone_requests_do_not_wait_for_a_long_batch_window(inline_run_max_s):
    batcher = DynamicBatcher(
        _Model(), max_batch_size=8, max_batch_delay_s=5.0, inline_run_max_s=inline_run_max_s
    )
    seconds = _sequential(batcher, 20)
    assert max(seconds) < 1.0, f"a lone request waited {max(seconds):.2f} s (window 5 s)"


def test_cheap_lone_requests_run_on_the_event_loop_thread():
    model = _Model()
    _sequential(
        DynamicBatcher(model, max_batch_size=8, max_batch_delay_s=5.0, inline_run_max_s=1.0), 5
    )
    threads = [thread for thread, _ in model.calls]
    # The first call has no cost estimate yet and goes to the worker; the rest run in place.
    assert threads[0] != threading.get_ident()
    assert threads[1:] == [threading.get_ident()] * 4


@pytest.mark.parametrize(
    ("sleep_s", "inline_run_max_s"), [(0.0, 0.0), (0.02, 0.005)], ids=["switched-off", "slow"]
)
def test_lone_requests_run_in_the_worker_when_inline_is_off_or_the_model_slow(
    sleep_s, inline_run_max_s
):
    model = _Model(sleep_s)
    batcher = DynamicBatcher(
        model, max_batch_size=8, max_batch_delay_s=5.0, inline_run_max_s=inline_run_max_s
    )
    _sequential(batcher, 5)
    assert threading.get_ident() not in {thread for thread, _ in model.calls}
    assert batcher.run_s_estimate is not None and batcher.run_s_estimate >= sleep_s


def test_concurrent_requests_still_form_batches_when_lone_ones_run_in_place():
    model = _Model()
    batcher = DynamicBatcher(model, max_batch_size=64, max_batch_delay_s=0.05, inline_run_max_s=1.0)

    async def main() -> list[tuple[np.ndarray, float]]:
        await _request(batcher, -1)  # measures the cost: later lone requests run in place
        # Handlers started together, as the event loop starts them for requests read together.
        return await asyncio.gather(*(_request(batcher, i) for i in range(16)))

    results = asyncio.run(main())
    batcher.close()
    batcher.join(5)
    for i, (out, _) in enumerate(results):
        np.testing.assert_array_equal(out, [[2.0 * i]])
    later = [rows for _, rows in model.calls[1:]]
    assert sum(later) == 16
    assert len(later) < 16, f"16 concurrent requests took {len(later)} model calls: {later}"
    assert threading.get_ident() not in {thread for thread, _ in model.calls[1:]}


def test_a_request_cancelled_while_it_yields_is_no_longer_counted():
    model = _Model()
    batcher = DynamicBatcher(model, max_batch_size=8, max_batch_delay_s=5.0, inline_run_max_s=1.0)

    async def main() -> float:
        await _request(batcher, 0)  # measured: the next lone request runs in place
        task = asyncio.ensure_future(_request(batcher, 1))
        await asyncio.sleep(0)  # the task has announced itself and yields once before running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        _, took = await _request(batcher, 2)
        return took

    took = asyncio.run(main())
    batcher.close()
    batcher.join(5)
    # Counted as still coming, it would hold the next lone request for the 5 s window.
    assert took < 1.0
    assert model.calls[-1][0] == threading.get_ident()


@pytest.mark.parametrize("inline_run_max_s", [1.0, 0.0], ids=["inline-on", "inline-off"])
def test_a_batch_waits_for_an_announced_request_at_most_the_window(inline_run_max_s):
    window_s = 0.3
    batcher = DynamicBatcher(
        _Model(), max_batch_size=8, max_batch_delay_s=window_s, inline_run_max_s=inline_run_max_s
    )

    async def main() -> float:
        await _request(batcher, 0)
        batcher.announce()  # a request still uploading its body, which never comes
        _, took = await _request(batcher, 1)
        batcher.withdraw()
        return took

    took = asyncio.run(main())
    batcher.close()
    batcher.join(5)
    assert window_s * 0.8 <= took < window_s + 1.0


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
