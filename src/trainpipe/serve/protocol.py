"""Open Inference Protocol v2 (REST) inference payloads: parsing, validation, encoding.

JSON tensors and the binary tensor extension (as Triton and KServe define it): with an
``Inference-Header-Content-Length: N`` header the first N bytes of the body are the JSON request
and the rest holds the raw little-endian tensors, in input order, each sized by its
``parameters.binary_data_size``. Outputs come back the same way when an output asks for
``parameters.binary_data`` or the request sets ``parameters.binary_data_output``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from trainpipe.serve.errors import InvalidInput
from trainpipe.serve.model import ModelMetadata

HEADER_LENGTH = "inference-header-content-length"
_MAX_INT_DIGITS = 20
"""Longer integer literals are out of range for every OIP datatype (int64 has 19 digits)."""
_VALUE_TYPES: dict[str, tuple[type, ...]] = {
    "f": (int, float),
    "i": (int,),
    "u": (int,),
    "b": (bool,),
}
"""JSON value types each kind of datatype accepts: no strings, and booleans only for BOOL."""
_TYPE_NAMES = {str: "strings", bool: "booleans", dict: "objects", type(None): "nulls"}
_EXAMPLE = '{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [...]}]}'


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    rows: int
    outputs: tuple[tuple[str, bool], ...]
    """(output name, send as binary) in the order the response lists them."""


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    metadata: ModelMetadata,
    *,
    max_batch_size: int,
    allow_non_finite: bool,
) -> InferRequest:
    """Decode and validate one inference request against the model's inputs and outputs."""
    json_part, binary = _split_body(body, header_length)
    request = _loads(json_part)
    if not isinstance(request, dict):
        raise InvalidInput(f"the request must be a JSON object like {_EXAMPLE}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"the request needs a non-empty 'inputs' list, like {_EXAMPLE}")
    parameters = _parameters(request, "the request")

    specs = {spec.name: spec for spec in metadata.inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    rows = -1
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(
                f"every entry of 'inputs' must be an object with a 'name', like {_EXAMPLE}"
            )
        name = tensor["name"]
        spec = specs.get(name)
        if spec is None:
            raise InvalidInput(
                f"unknown input {name!r}; model {metadata.name} takes {_names(metadata.inputs)}"
            )
        if name in feeds:
            raise InvalidInput(f"input {name!r} is given twice; send each input once")
        datatype = tensor.get("datatype")
        if datatype != spec.datatype:
            raise InvalidInput(
                f"input {name!r} has datatype {datatype!r} but model {metadata.name} expects "
                f"{spec.datatype}; convert the data to {spec.datatype}"
            )
        shape = _shape(tensor.get("shape"), name)
        expected = ["N" if d < 0 else d for d in spec.shape]
        if len(shape) != len(spec.shape) or any(
            want >= 0 and got != want for got, want in zip(shape[1:], spec.shape[1:], strict=True)
        ):
            raise InvalidInput(
                f"input {name!r} has shape {shape} but model {metadata.name} expects "
                f"{expected} (N = batch size); reshape the data"
            )
        if shape[0] < 1:
            raise InvalidInput(f"input {name!r} has batch size 0; send at least one row")
        if shape[0] > max_batch_size:
            raise InvalidInput(
                f"input {name!r} has batch size {shape[0]}, over this server's max_batch_size "
                f"{max_batch_size}; split the request into batches of at most {max_batch_size}"
            )
        if rows >= 0 and shape[0] != rows:
            raise InvalidInput(
                f"inputs disagree on the batch size ({rows} vs {shape[0]} for {name!r}); "
                "every input needs the same first dimension"
            )
        rows = shape[0]
        count = math.prod(shape)
        binary_size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
        if binary_size is not None and "data" in tensor:
            raise InvalidInput(
                f"input {name!r} has both 'data' and a binary_data_size parameter; send "
                "its values one way: in 'data' or in the binary section"
            )
        if spec.datatype == "BYTES":
            if binary_size is not None:
                array, offset = _binary_strings(binary, offset, binary_size, count, name)
            else:
                array = _json_strings(tensor.get("data"), len(spec.shape), count, name)
        elif binary_size is not None:
            array, offset = _binary_tensor(binary, offset, binary_size, spec.dtype, count, name)
        else:
            array = _json_tensor(tensor.get("data"), spec, count, name)
        array = array.reshape(shape)
        if not allow_non_finite and array.dtype.kind == "f":
            _check_finite(array, name, spec.allow_missing)
        feeds[name] = array
    if offset != len(binary):
        raise InvalidInput(
            f"the binary section has {len(binary) - offset} bytes that no input claims; "
            "binary_data_size of the inputs must add up to the bytes after the JSON header"
        )
    missing = [spec.name for spec in metadata.inputs if spec.name not in feeds]
    if missing:
        raise InvalidInput(
            f"missing input(s) {missing}; model {metadata.name} takes {_names(metadata.inputs)}"
        )
    return InferRequest(
        id=_request_id(request),
        feeds=feeds,
        rows=rows,
        outputs=_requested_outputs(request, metadata, bool(parameters.get("binary_data_output"))),
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {header_length!r} but the body has "
            f"{len(body)} bytes; it must be the byte length of the JSON part"
        )
    return body[:length], body[length:]


class _OutOfRange(ValueError):
    """A JSON number no datatype can hold."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _OutOfRange(text)
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _OutOfRange(text)
    return int(text)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise InvalidInput(
                "the request nests arrays or objects over 1024 levels deep; send each tensor's "
                "data as a flat list or nested as deep as its shape"
            ) from None
        try:
            # Python's json also reads NaN and Infinity, which clients send for non-finite floats;
            # accepting them here lets the non-finite check give the precise answer. Numbers
            # beyond any datatype's range are refused while parsing.
            return json.loads(data, parse_float=_finite_float, parse_int=_bounded_int)
        except _OutOfRange as big:
            text = str(big)
            shown = text if len(text) <= 24 else f"{text[:20]}… ({len(text)} characters)"
            raise InvalidInput(
                f"the request holds the number {shown}, which is out of range for every "
                "tensor datatype; send values within the input's datatype"
            ) from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        raise InvalidInput(
            f"the request body is not valid JSON ({exc}); send an OIP v2 inference request "
            f"like {_EXAMPLE}"
        ) from None


def _parameters(obj: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = obj.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {what} must be a JSON object")
    return parameters


def _shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(
            f"input {name!r} needs 'shape', a list of non-negative integers such as [1, 1, 8, 8]"
        )
    return shape


def _flatten(data: list[Any], depth: int, name: str) -> list[Any]:
    """The values of a flat or regularly nested list, nested at most ``depth`` levels."""
    flat = data
    for _ in range(depth - 1):
        nested = [type(v) is list for v in flat]
        if not any(nested):
            return flat
        if not all(nested):
            raise InvalidInput(
                f"input {name!r} data mixes lists and values at one level; send a flat list or "
                "regularly nested lists"
            )
        if len({len(inner) for inner in flat}) > 1:
            raise InvalidInput(
                f"input {name!r} data is ragged (nested lists of different lengths) and cannot "
                "be read as a tensor; send a flat list or regularly nested lists"
            )
        flat = [value for inner in flat for value in inner]
    if any(type(v) is list for v in flat):
        raise InvalidInput(
            f"input {name!r} data is nested deeper than its {depth}-dimensional shape; send a "
            "flat list or lists nested as its shape"
        )
    return flat


def _json_tensor(data: Any, spec: Any, count: int, name: str) -> np.ndarray:
    dtype: np.dtype = spec.dtype
    if not isinstance(data, list):
        raise InvalidInput(
            f"input {name!r} has no 'data' list (and no binary_data_size parameter); send the "
            "values row-major as a flat or nested list"
        )
    flat = _flatten(data, len(spec.shape), name)
    allowed = _VALUE_TYPES.get(dtype.kind, (int, float))
    if spec.allow_missing:
        allowed = (*allowed, type(None))  # null: a missing value the model imputes
    wrong = {type(v) for v in flat} - set(allowed)
    if wrong:
        names = ", ".join(sorted(_TYPE_NAMES.get(t, t.__name__) for t in wrong))
        raise InvalidInput(
            f"input {name!r} data holds {names}, but datatype {spec.datatype} takes only "
            f"{'true/false' if dtype.kind == 'b' else 'numbers'}; send JSON "
            f"{'booleans' if dtype.kind == 'b' else 'numbers (not quoted)'}"
        )
    try:
        array = np.array(flat, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input {name!r} data cannot be read as {spec.datatype} ({exc}); send values within "
            "the datatype's range"
        ) from None
    if (
        dtype.kind == "f"
        and not np.isfinite(array).all()
        and np.isfinite(np.array(flat, dtype=np.float64)).all()
    ):
        raise InvalidInput(
            f"input {name!r} holds values beyond the range of {spec.datatype}; scale the data "
            "or send a wider datatype"
        )
    if array.size != count:
        raise InvalidInput(
            f"input {name!r} has {array.size} values but its shape needs {count}; make the data "
            "match the shape"
        )
    return array


def _check_finite(array: np.ndarray, name: str, allow_missing: bool) -> None:
    if allow_missing:
        # NaN (JSON null) is a missing value the model imputes; infinity is still refused.
        if np.isinf(array).any():
            raise InvalidInput(
                f"input {name!r} contains infinity, which this server refuses; send null or NaN "
                "for a missing value"
            )
        return
    if not np.isfinite(array).all():
        raise InvalidInput(
            f"input {name!r} contains NaN or infinity, which this server refuses "
            "(allow_non_finite is off); fix the preprocessing that produced them"
        )


def _json_strings(data: Any, depth: int, count: int, name: str) -> np.ndarray:
    """BYTES as JSON: a (nested) list of strings; null is a missing value (empty string)."""
    if not isinstance(data, list):
        raise InvalidInput(
            f"input {name!r} has no 'data' list; send BYTES values as a list of strings"
        )
    values = _flatten(data, depth, name)
    if not all(v is None or isinstance(v, str) for v in values):
        raise InvalidInput(
            f"input {name!r} is BYTES but its data holds non-strings; send each value as a "
            "JSON string (null for missing)"
        )
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has {len(values)} values but its shape needs {count}; make the data "
            "match the shape"
        )
    return np.array(["" if v is None else v for v in values], dtype=object)


def _binary_strings(
    binary: bytes, offset: int, size: Any, count: int, name: str
) -> tuple[np.ndarray, int]:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then bytes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
    end = offset + size
    if end > len(binary):
        raise InvalidInput(
            f"input {name!r} claims bytes {offset}..{end} of the binary section, which has only "
            f"{len(binary)}; check Inference-Header-Content-Length and binary_data_size"
        )
    values, at = [], offset
    while at < end:
        if at + 4 > end:
            break
        length = int.from_bytes(binary[at : at + 4], "little")
        if at + 4 + length > end:
            break
        try:
            values.append(binary[at + 4 : at + 4 + length].decode())
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r} holds bytes that are not UTF-8 text") from None
        at += 4 + length
    if at != end or len(values) != count:
        raise InvalidInput(
            f"input {name!r}: its {size} binary bytes do not hold {count} length-prefixed "
            "strings (4-byte little-endian length, then the bytes, per element)"
        )
    return np.array(values, dtype=object), end


def _string_blob(array: np.ndarray) -> bytes:
    parts = []
    for value in array.reshape(-1).tolist():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(len(data).to_bytes(4, "little") + data)
    return b"".join(parts)


def _binary_tensor(
    binary: bytes, offset: int, size: Any, dtype: np.dtype, count: int, name: str
) -> tuple[np.ndarray, int]:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
    if size != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r} has binary_data_size {size} but its shape and datatype need "
            f"{count * dtype.itemsize} bytes; make the data match the shape"
        )
    end = offset + size
    if end > len(binary):
        raise InvalidInput(
            f"input {name!r} claims bytes {offset}..{end} of the binary section, which has only "
            f"{len(binary)}; check Inference-Header-Content-Length and binary_data_size"
        )
    array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
    return array, end


def _request_id(request: dict[str, Any]) -> str | None:
    request_id = request.get("id")
    return None if request_id is None else str(request_id)


def _requested_outputs(
    request: dict[str, Any], metadata: ModelMetadata, binary_default: bool
) -> tuple[tuple[str, bool], ...]:
    requested = request.get("outputs")
    if requested is None:
        return tuple((spec.name, binary_default) for spec in metadata.outputs)
    if not isinstance(requested, list):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    known = {spec.name for spec in metadata.outputs}
    chosen = []
    for output in requested:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput("every entry of 'outputs' must be an object with a 'name'")
        if output["name"] not in known:
            raise InvalidInput(
                f"unknown output {output['name']!r}; model {metadata.name} returns "
                f"{_names(metadata.outputs)}"
            )
        binary = _parameters(output, f"output {output['name']!r}").get("binary_data")
        chosen.append((output["name"], binary_default if binary is None else bool(binary)))
    return tuple(chosen)


def _names(specs: Any) -> list[str]:
    return [spec.name for spec in specs]


def encode_infer_response(
    metadata: ModelMetadata, request: InferRequest, outputs: list[np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    by_name = {
        spec.name: (spec, array) for spec, array in zip(metadata.outputs, outputs, strict=True)
    }
    tensors = []
    blobs = []
    for name, binary in request.outputs:
        spec, array = by_name[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": spec.datatype,
            "shape": list(array.shape),
        }
        if spec.datatype == "BYTES":
            if binary:
                blob = _string_blob(array)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = [
                    v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)
                ]
        elif binary:
            blob = np.ascontiguousarray(array, dtype=spec.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = np.ascontiguousarray(array).reshape(-1)
        tensors.append(tensor)
    response: dict[str, Any] = {
        "model_name": metadata.name,
        "model_version": metadata.version,
        "outputs": tensors,
    }
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
