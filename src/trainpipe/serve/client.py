"""A minimal OIP v2 client (JSON tensors, standard library only) for the pipeline and for users.

    wait_ready("http://127.0.0.1:8080", timeout_s=60)
    logits = infer("http://127.0.0.1:8080", "digits-classifier", images)   # images: (N, 1, 8, 8)

Any OIP v2 server works (Triton, KServe, this one). For high throughput use tritonclient.http
with binary data; this helper favours having no dependencies.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from trainpipe.serve.model import DATATYPE_TO_NUMPY, NUMPY_TO_DATATYPE


class InferenceClientError(Exception):
    """The server refused the request or could not be reached; the message carries its reason."""


def _request(url: str, body: bytes | None, timeout_s: float) -> Any:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise InferenceClientError(f"{url} answered {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InferenceClientError(f"cannot reach {url}: {exc}") from None


def model_metadata(url: str, model: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    return _request(f"{url.rstrip('/')}/v2/models/{model}", None, timeout_s)


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    datatype = NUMPY_TO_DATATYPE.get(array.dtype)
    if array.dtype.kind in "US":
        datatype, array = "BYTES", array.astype(object)
    if datatype is None:
        raise InferenceClientError(
            f"arrays of dtype {array.dtype} cannot be sent; use one of "
            f"{sorted(str(d) for d in DATATYPE_TO_NUMPY.values())} or strings"
        )
    values = array.reshape(-1).tolist()
    if datatype != "BYTES" and array.dtype.kind == "f":
        # JSON has no NaN: a missing value travels as null.
        values = [None if v != v else v for v in values]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": values}


def infer_outputs(
    url: str,
    model: str,
    feeds: dict[str, np.ndarray],
    *,
    version: str | None = None,
    output_names: list[str] | None = None,
    timeout_s: float = 10.0,
) -> dict[str, np.ndarray]:
    """Run named inputs (one array per input, batch axis first; strings as str arrays, NaN for
    missing numbers) through ``model``; returns every (or every named) output by name."""
    body: dict[str, Any] = {"inputs": [_tensor(name, array) for name, array in feeds.items()]}
    if output_names is not None:
        body["outputs"] = [{"name": name} for name in output_names]
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    response = _request(url.rstrip("/") + path, json.dumps(body).encode(), timeout_s)
    return {
        output["name"]: np.asarray(
            output["data"], dtype=DATATYPE_TO_NUMPY[output["datatype"]]
        ).reshape(output["shape"])
        for output in response["outputs"]
    }


def infer(
    url: str,
    model: str,
    array: np.ndarray,
    *,
    version: str | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    timeout_s: float = 10.0,
) -> np.ndarray:
    """Run ``array`` (batch axis first) through ``model``; returns the first (or named) output.

    Without ``input_name`` the model's first input is used (one metadata request).
    """
    if input_name is None:
        input_name = model_metadata(url, model, timeout_s=timeout_s)["inputs"][0]["name"]
    outputs = infer_outputs(
        url,
        model,
        {input_name: array},
        version=version,
        output_names=None if output_name is None else [output_name],
        timeout_s=timeout_s,
    )
    return next(iter(outputs.values()))


def wait_ready(url: str, timeout_s: float = 60.0, *, interval_s: float = 0.1) -> None:
    """Poll /v2/health/ready until it answers 200; raises TimeoutError naming the last answer."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{url} was not ready within {timeout_s} s (last answer: {last}); check the "
                "server log for the model load"
            )
        time.sleep(interval_s)
