"""A model package (``model.onnx`` + ``model.json`` in an artifact set) loaded into ONNX Runtime.

    model = load_model_package("s3://bucket/registry/digits-classifier/versions/3", ServeConfig())
    logits = model.run({"input": np.zeros((4, 1, 8, 8), np.float32)})[0]
    model = load_onnx_file("/models/model.onnx", ServeConfig())     # a single file

Loading reads every file through :class:`trainpipe.artifacts.ArtifactSet` (sha256 against the
manifest), checks ``model.onnx`` against the sha256 in ``model.json`` as well, checks that the
ONNX graph has the inputs and outputs ``model.json`` promises, and warms the session up. A single
.onnx file outside a package is checked against the ``model.json`` beside it when there is one;
without one its name is the file's stem, its version "1", and its signature the graph's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import onnxruntime as ort

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.serve.batcher import DynamicBatcher
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import InferenceFailed, ModelLoadError
from trainpipe.serve.metrics import ServeMetrics
from trainpipe.serve.text import (
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    TEXT_INPUT,
    TEXT_OUTPUTS,
    TextFrontend,
    TextSpec,
)
from trainpipe.storage import StorageError, Store, open_store, sha256_bytes, split_uri

log = logging.getLogger("trainpipe.serve")

MODEL_FILE = "model.onnx"
METADATA_FILE = "model.json"

# Open Inference Protocol datatypes and their numpy dtypes (BYTES: strings, as numpy objects).
DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    "BYTES": np.dtype(object),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_DATATYPE: dict[np.dtype, str] = {v: k for k, v in DATATYPE_TO_NUMPY.items()}
_ORT_TYPE_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 marks a dynamic dimension; dimension 0 is always the (dynamic) batch axis."""
    allow_missing: bool = False
    """NaN (or JSON null) marks a missing value the model imputes itself (table inputs)."""

    @property
    def dtype(self) -> np.dtype:
        return DATATYPE_TO_NUMPY[self.datatype]

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.allow_missing:
            data["allow_missing"] = True
        return data

    def placeholder(self, rows: int) -> np.ndarray:
        """A valid input of ``rows`` rows (warm-up): zeros, or empty strings for BYTES."""
        shape = (rows, *(1 if d < 0 else d for d in self.shape[1:]))
        if self.datatype == "BYTES":
            return np.full(shape, "", dtype=object)
        return np.zeros(shape, dtype=self.dtype)


@dataclass(frozen=True)
class ModelMetadata:
    """``model.json`` of a model package, validated."""

    name: str
    version: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    sha256: str
    uri: str
    graph_optimization_level: str | None = None
    """The level the export stage measured as fastest; used unless ServeConfig sets one."""
    text: TextSpec | None = None
    """A text classifier: the server tokenizes a BYTES ``text`` input (serve/text.py)."""

    @classmethod
    def from_json(cls, obj: Any, uri: str) -> ModelMetadata:
        where = f"{uri}/{METADATA_FILE}"
        if not isinstance(obj, dict):
            raise ModelLoadError(f"{where} is not a JSON object; re-run the export stage")
        try:
            return cls(
                name=str(obj["name"]),
                version=str(obj["version"]),
                platform=str(obj.get("platform", "onnxruntime_onnx")),
                inputs=tuple(_tensor_spec(t, where) for t in obj["inputs"]),
                outputs=tuple(_tensor_spec(t, where) for t in obj["outputs"]),
                labels=tuple(str(label) for label in obj.get("labels", [])),
                sha256=str(obj["sha256"]),
                uri=uri,
                graph_optimization_level=_optimization_level(obj, where),
                text=None if obj.get("text") is None else TextSpec.from_json(obj["text"], where),
            )
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"{where} lacks or mangles field {exc}; it needs name, version, inputs, outputs "
                "and sha256 (re-run the export stage)"
            ) from exc


def _tensor_spec(obj: dict[str, Any], where: str) -> TensorSpec:
    datatype = str(obj["datatype"])
    if datatype not in DATATYPE_TO_NUMPY:
        raise ModelLoadError(
            f"{where}: tensor {obj['name']!r} has datatype {datatype!r}; this server serves "
            f"{', '.join(DATATYPE_TO_NUMPY)}"
        )
    shape = tuple(int(d) for d in obj["shape"])
    if not shape or shape[0] != -1:
        raise ModelLoadError(
            f"{where}: tensor {obj['name']!r} has shape {list(shape)}; the first axis must be "
            "the dynamic batch axis (-1); export with a dynamic batch dimension"
        )
    return TensorSpec(
        name=str(obj["name"]),
        datatype=datatype,
        shape=shape,
        allow_missing=bool(obj.get("allow_missing", False)),
    )


def _optimization_level(obj: dict[str, Any], where: str) -> str | None:
    level = obj.get("graph_optimization_level")
    if level is not None and level not in _OPTIMIZATION_LEVELS:
        raise ModelLoadError(
            f"{where}: graph_optimization_level {level!r} is not one of "
            f"{', '.join(_OPTIMIZATION_LEVELS)}; re-run the export stage"
        )
    return level


def session_options(
    config: ServeConfig, recommended_level: str | None = None
) -> ort.SessionOptions:
    """Options for every session this server creates; ``recommended_level`` is the package's."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    # One graph, one call at a time per model: parallelism between operators buys nothing.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = config.graph_optimization_level or recommended_level or "all"
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[level]
    # Spinning worker threads would steal the core the HTTP event loop needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class LoadedModel:
    """An ONNX Runtime session, its metadata, and the dynamic batcher in front of it."""

    def __init__(
        self,
        metadata: ModelMetadata,
        session: ort.InferenceSession,
        config: ServeConfig,
        *,
        metrics: ServeMetrics | None = None,
        frontend: TextFrontend | None = None,
    ):
        self.metadata = metadata
        self.session = session
        self.frontend = frontend
        self._output_names = [spec.name for spec in metadata.outputs]
        self.batcher = DynamicBatcher(
            self.run,
            max_batch_size=config.max_batch_size,
            max_batch_delay_s=config.max_batch_delay_ms / 1000.0,
            inline_run_max_s=config.inline_run_max_ms / 1000.0,
            on_batch=metrics.batch_observer(metadata.name) if metrics else None,
            name=f"{metadata.name}-v{metadata.version}",
        )

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One ONNX Runtime call, outputs in ``metadata.outputs`` order."""
        try:
            if self.frontend is not None:
                ids = self.frontend.encode(feeds[TEXT_INPUT])
                logits = self.session.run([GRAPH_OUTPUT], {GRAPH_INPUT: ids})[0]
                return self.frontend.outputs(logits)
            return self.session.run(self._output_names, feeds)
        except Exception as exc:  # ORT raises its own untyped errors for runtime failures
            raise InferenceFailed(
                f"ONNX Runtime failed on model {self.name} version {self.version}: {exc}; "
                "the inputs passed validation, so this is a model or server problem "
                "(check the server log)"
            ) from exc

    def warm_up(self, batch_sizes: tuple[int, ...], iterations: int) -> None:
        for batch in batch_sizes:
            feeds = {spec.name: spec.placeholder(batch) for spec in self.metadata.inputs}
            for _ in range(iterations):
                self.run(feeds)

    def close(self) -> None:
        """Stop accepting work once the requests already admitted have been answered."""
        self.batcher.close()


def load_model_package(
    uri: str,
    config: ServeConfig,
    *,
    metrics: ServeMetrics | None = None,
) -> LoadedModel:
    """Read, verify, load and warm up the model package at ``uri``; raises ModelLoadError."""
    started = time.monotonic()
    try:
        package = ArtifactSet.open(uri, endpoint_url=config.endpoint_url)
        metadata = ModelMetadata.from_json(package.get_json(METADATA_FILE), package.uri)
        model_bytes = package.get_bytes(MODEL_FILE)
        tokenizer_json = package.get_bytes(metadata.text.tokenizer) if metadata.text else None
    except StorageError as exc:
        raise ModelLoadError(f"cannot read model package {uri}: {exc}") from exc
    except ValueError as exc:  # model.json is not JSON (the bytes matched the manifest)
        raise ModelLoadError(
            f"{uri}/{METADATA_FILE} is not valid JSON ({exc}); re-run the export stage"
        ) from exc
    _check_sha256(uri, model_bytes, metadata)
    return _start_session(
        uri, model_bytes, metadata, config, metrics, started, tokenizer_json=tokenizer_json
    )


def load_onnx_file(
    uri: str,
    config: ServeConfig,
    *,
    metrics: ServeMetrics | None = None,
) -> LoadedModel:
    """Load a single ``.onnx`` file (and the ``model.json`` beside it, when present)."""
    started = time.monotonic()
    folder, name = split_uri(uri)
    try:
        store = open_store(folder, endpoint_url=config.endpoint_url)
        model_bytes = store.get_bytes(name)
        metadata_obj = store.get_json(METADATA_FILE) if store.exists(METADATA_FILE) else None
    except StorageError as exc:
        raise ModelLoadError(f"cannot read {uri}: {exc}") from exc
    metadata = ModelMetadata.from_json(metadata_obj, folder) if metadata_obj else None
    if metadata is not None and (
        name == MODEL_FILE or metadata.sha256 == sha256_bytes(model_bytes)
    ):
        _check_sha256(folder, model_bytes, metadata)
    else:  # no model.json, or one that describes another file in the folder
        metadata = _metadata_from_graph(uri, model_bytes, name.removesuffix(".onnx"))
    tokenizer_json = None
    if metadata.text is not None:  # a text model's tokenizer lies beside its model.json
        try:
            tokenizer_json = store.get_bytes(metadata.text.tokenizer)
        except StorageError as exc:
            raise ModelLoadError(f"cannot read the tokenizer of {uri}: {exc}") from exc
    return _start_session(
        uri, model_bytes, metadata, config, metrics, started, tokenizer_json=tokenizer_json
    )


def _check_sha256(uri: str, model_bytes: bytes, metadata: ModelMetadata) -> None:
    actual = sha256_bytes(model_bytes)
    if actual != metadata.sha256:
        raise ModelLoadError(
            f"{uri}/{MODEL_FILE} has sha256 {actual[:12]}… but model.json records "
            f"{metadata.sha256[:12]}…; the package is inconsistent, re-run the export stage"
        )


def _metadata_from_graph(uri: str, model_bytes: bytes, name: str) -> ModelMetadata:
    """Metadata for a bare .onnx file: the graph's own inputs and outputs."""
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for invalid graphs
        raise ModelLoadError(
            f"ONNX Runtime cannot load {uri}: {exc}; is it an ONNX model?"
        ) from exc

    def specs(nodes) -> tuple[TensorSpec, ...]:
        out = []
        for node in nodes:
            datatype = _ORT_TYPE_TO_DATATYPE.get(node.type)
            if datatype is None:
                raise ModelLoadError(
                    f"{uri}: tensor {node.name!r} is {node.type}; this server serves "
                    f"{', '.join(DATATYPE_TO_NUMPY)}"
                )
            if node.shape and isinstance(node.shape[0], int):
                raise ModelLoadError(
                    f"{uri}: tensor {node.name!r} has a fixed batch size {node.shape[0]}; "
                    "export the model with a dynamic first (batch) axis"
                )
            shape = (-1, *(d if isinstance(d, int) else -1 for d in node.shape[1:]))
            out.append(TensorSpec(name=node.name, datatype=datatype, shape=shape))
        return tuple(out)

    return ModelMetadata(
        name=name,
        version="1",
        platform="onnxruntime_onnx",
        inputs=specs(session.get_inputs()),
        outputs=specs(session.get_outputs()),
        labels=(),
        sha256=sha256_bytes(model_bytes),
        uri=uri,
    )


def _start_session(
    uri: str,
    model_bytes: bytes,
    metadata: ModelMetadata,
    config: ServeConfig,
    metrics: ServeMetrics | None,
    started: float,
    *,
    tokenizer_json: bytes | None = None,
) -> LoadedModel:
    """Create the session, check its signature against the metadata, and warm it up
    (``tokenizer_json``: a text model's tokenizer, see serve/text.py)."""
    try:
        session = ort.InferenceSession(
            model_bytes,
            session_options(config, metadata.graph_optimization_level),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # ORT raises its own untyped errors for invalid graphs
        raise ModelLoadError(
            f"ONNX Runtime cannot load {uri}/{MODEL_FILE}: {exc}; re-run the export stage"
        ) from exc
    frontend = None
    if metadata.text is not None:
        _check_text_signature(session, metadata)
        frontend = TextFrontend(metadata.text, tokenizer_json, metadata.labels, uri)
    else:
        _check_signature(session, metadata)
    model = LoadedModel(metadata, session, config, metrics=metrics, frontend=frontend)
    try:
        model.warm_up((1, config.max_batch_size), config.warmup_iterations)
    except InferenceFailed as exc:
        model.close()
        raise ModelLoadError(f"warm-up of {uri} failed: {exc}") from exc
    log.info(
        "loaded model %s version %s from %s in %.2f s (graph optimization %s)",
        metadata.name,
        metadata.version,
        uri,
        time.monotonic() - started,
        config.graph_optimization_level or metadata.graph_optimization_level or "all",
    )
    return model


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata) -> None:
    """model.json must describe the graph exactly: a mismatch would fail every request later."""
    for kind, declared, actual in (
        ("input", metadata.inputs, session.get_inputs()),
        ("output", metadata.outputs, session.get_outputs()),
    ):
        graph = {a.name: a for a in actual}
        if sorted(graph) != sorted(spec.name for spec in declared):
            raise ModelLoadError(
                f"{metadata.uri}: model.json declares {kind}s "
                f"{[spec.name for spec in declared]} but the ONNX graph has {sorted(graph)}; "
                "re-run the export stage"
            )
        for spec in declared:
            node = graph[spec.name]
            graph_type = _ORT_TYPE_TO_DATATYPE.get(node.type, node.type)
            if graph_type != spec.datatype or len(node.shape) != len(spec.shape):
                raise ModelLoadError(
                    f"{metadata.uri}: {kind} {spec.name!r} is {spec.datatype} "
                    f"{list(spec.shape)} in model.json but {graph_type} {node.shape} in the "
                    "ONNX graph; re-run the export stage"
                )


def _check_text_signature(session: ort.InferenceSession, metadata: ModelMetadata) -> None:
    """A text package serves text -> label/probabilities/logits over a graph that maps int64
    ids ``[batch, seq]`` to logits ``[batch, classes]``."""
    inputs = [(i.name, i.type, len(i.shape)) for i in session.get_inputs()]
    outputs = [(o.name, len(o.shape)) for o in session.get_outputs()]
    served_in = [(spec.name, spec.datatype) for spec in metadata.inputs]
    served_out = tuple(spec.name for spec in metadata.outputs)
    if (
        inputs != [(GRAPH_INPUT, "tensor(int64)", 2)]
        or outputs != [(GRAPH_OUTPUT, 2)]
        or served_in != [(TEXT_INPUT, "BYTES")]
        or served_out != TEXT_OUTPUTS
    ):
        raise ModelLoadError(
            f"{metadata.uri}: a text package needs a graph {GRAPH_INPUT}(int64 [batch, seq]) "
            f"-> {GRAPH_OUTPUT}([batch, classes]) and model.json inputs [{TEXT_INPUT} BYTES], "
            f"outputs {list(TEXT_OUTPUTS)}; found graph {inputs} -> {outputs}, model.json "
            f"{served_in} -> {list(served_out)}; re-run the export"
        )


def text_signature(num_classes: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs ``model.json`` declares for a text classifier package."""
    return (
        [TensorSpec(TEXT_INPUT, "BYTES", (-1,))],
        [
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, num_classes)),
            TensorSpec("logits", "FP32", (-1, num_classes)),
        ],
    )


def write_model_package(
    store: Store,
    prefix: str,
    model_onnx: bytes,
    *,
    name: str,
    version: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    labels: list[str] | None = None,
    opset: int | None = None,
    run_id: str = "serve",
    text: TextSpec | None = None,
    tokenizer_json: bytes | None = None,
    extra_files: dict[str, bytes] | None = None,
    started: tuple[datetime, float] | None = None,
) -> str:
    """Write a model package (``model.onnx`` + ``model.json``) as an artifact set; returns its URI.
    ``extra_files`` go into the same set (a pipeline's export adds its parity report);
    ``started`` (wall clock, monotonic) dates the manifest from when the export began.

    The layout this server reads; the export stage and tests write it through here or identically.
    """
    writer = ArtifactWriter(store, prefix, stage="export", run_id=run_id, started=started)
    writer.put_bytes(MODEL_FILE, model_onnx)
    for file_name, data in (extra_files or {}).items():
        writer.put_bytes(file_name, data)
    if text is not None:
        writer.put_bytes(text.tokenizer, tokenizer_json or b"")
    writer.put_json(
        METADATA_FILE,
        {
            "name": name,
            "version": version,
            "platform": "onnxruntime_onnx",
            "inputs": [spec.to_json() for spec in inputs],
            "outputs": [spec.to_json() for spec in outputs],
            "labels": list(labels or []),
            "sha256": sha256_bytes(model_onnx),
            "opset": opset,
            **({"text": text.to_json()} if text is not None else {}),
        },
    )
    return writer.commit(summary={"model": name, "version": version})
