"""Feature preprocessing fitted on the training split, carried inside the model and its ONNX graph.

    spec = fit_preprocess(columns, train_x)          # columns: ColumnSpec per table column
    features = Preprocessor(spec)(torch.as_tensor(x)) # what the network sees
    front = serving_front(spec, opset=18)            # raw named inputs -> the model's input

A table is first *encoded* (``trainpipe.data.datasets``): one float32 column per table column,
numeric values as they are (NaN where missing) and categories as codes (0 = missing or unseen,
``i + 1`` for the i-th category seen in the training split). That encoded matrix is what the
stored splits hold and what the exported model's ``input`` takes. :class:`Preprocessor` turns it
into features inside the model:

- numeric: missing values become the training median, plus a 0/1 missing-indicator feature for
  every column that had missing values in training; then ``(x - median) / scale`` with the
  interquartile range as scale (standard deviation, then 1, when that is 0), clipped to
  ``+-CLIP``, so one outlier neither dominates the scale nor the activations;
- categorical: one-hot over the known categories plus the reserved bucket 0, so an unseen
  value at serving time is a valid input, never an error.

For tables with categorical columns the served graph gets one named input per column (strings
as ONNX ``string``/OIP ``BYTES``, integers as INT64, booleans as BOOL, numbers as FP32 with NaN
for missing) and ONNX-ML ``LabelEncoder`` nodes that map categories to codes, merged in front
of the exported torch graph (torch's exporter cannot take strings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

CLIP = 5.0
"""Scaled numeric features are clipped to [-CLIP, CLIP]: about 3.4 interquartile ranges."""
IQR_TO_STD = 1.349
"""The interquartile range of a normal distribution in standard deviations: dividing by it makes
robust scaling agree with standardization on well-behaved columns."""
MAX_CATEGORIES = 100
"""Only the most frequent categories of a column get their own feature; rarer ones share the
reserved bucket (high-cardinality strings would otherwise blow up the input width)."""
UNSEEN_CODE = 0

ColumnKind = Literal["numeric", "categorical"]
RawType = Literal["float", "int", "bool", "string"]


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    raw_type: RawType
    """Type of the column in the source table, which is also what the server accepts for it."""
    center: float = 0.0
    scale: float = 1.0
    indicator: bool = False
    """Whether a missing-indicator feature follows (the column had missing values in training)."""
    categories: list = field(default_factory=list)
    """Known categories in code order (code i + 1); strings, ints or booleans."""

    @property
    def width(self) -> int:
        if self.kind == "numeric":
            return 1 + int(self.indicator)
        return len(self.categories) + 1


@dataclass(frozen=True)
class PreprocessSpec:
    columns: list[ColumnSpec]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_width(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def has_categorical(self) -> bool:
        return any(c.kind == "categorical" for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls([ColumnSpec(**c) for c in data["columns"]])

    def describe(self) -> list[dict[str, Any]]:
        """One line per column for model.json and the docs a user reads."""
        out = []
        for c in self.columns:
            if c.kind == "numeric":
                out.append(
                    {
                        "column": c.name,
                        "kind": "numeric",
                        "impute": c.center,
                        "center": c.center,
                        "scale": c.scale,
                        "clip": CLIP,
                        "missing_indicator": c.indicator,
                    }
                )
            else:
                out.append(
                    {
                        "column": c.name,
                        "kind": "categorical",
                        "type": c.raw_type,
                        "categories": list(c.categories),
                        "unseen_or_missing": "reserved bucket (code 0)",
                    }
                )
        return out


def category_codes(values: list, categories: list) -> np.ndarray:
    """Codes of raw values: ``i + 1`` for ``categories[i]``, 0 for missing or unseen."""
    index = {v: i + 1 for i, v in enumerate(categories)}
    return np.array([index.get(v, UNSEEN_CODE) for v in values], dtype=np.float32)


def fit_categories(values: list) -> list:
    """The training split's categories, most frequent first (ties by value), at most
    ``MAX_CATEGORIES``."""
    present = [v for v in values if v is not None]
    kinds, counts = np.unique(np.array(present, dtype=object).astype(str), return_counts=True)
    by_text = {str(v): v for v in present}
    ranked = sorted(zip(kinds, counts, strict=True), key=lambda kc: (-kc[1], kc[0]))
    return [_plain(by_text[k]) for k, _ in ranked[:MAX_CATEGORIES]]


def _plain(value: Any) -> Any:
    """JSON- and torch.load-safe scalar."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return str(value)


def fit_numeric(name: str, raw_type: RawType, values: np.ndarray) -> ColumnSpec:
    """Median, robust scale and whether a missing indicator is needed, from training values."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return ColumnSpec(name, "numeric", raw_type, 0.0, 1.0, bool(np.isnan(values).any()))
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    scale = (q3 - q1) / IQR_TO_STD
    if not scale > 0:
        scale = float(finite.std())
    if not scale > 0:
        scale = 1.0
    return ColumnSpec(
        name, "numeric", raw_type, float(median), float(scale), bool(np.isnan(values).any())
    )


class Preprocessor(nn.Module):
    """Encoded table rows (``[batch, columns]`` float32) -> network features. No parameters:
    everything it needs is a buffer fitted on the training split."""

    def __init__(self, spec: PreprocessSpec):
        super().__init__()
        numeric = [i for i, c in enumerate(spec.columns) if c.kind == "numeric"]
        flagged = [j for j, i in enumerate(numeric) if spec.columns[i].indicator]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("indicator_index", torch.tensor(flagged, dtype=torch.long))
        self.register_buffer(
            "center", torch.tensor([spec.columns[i].center for i in numeric], dtype=torch.float32)
        )
        self.register_buffer(
            "scale", torch.tensor([spec.columns[i].scale for i in numeric], dtype=torch.float32)
        )
        self.categorical = [
            (i, len(c.categories) + 1) for i, c in enumerate(spec.columns) if c.kind != "numeric"
        ]
        self.out_features = spec.feature_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.numeric_index.numel():
            values = x.index_select(1, self.numeric_index)
            missing = torch.isnan(values)
            filled = torch.where(missing, self.center, values)
            parts.append(((filled - self.center) / self.scale).clamp(-CLIP, CLIP))
            if self.indicator_index.numel():
                parts.append(missing.index_select(1, self.indicator_index).to(x.dtype))
        for column, size in self.categorical:
            codes = x[:, column : column + 1]
            codes = torch.where(torch.isnan(codes), torch.zeros_like(codes), codes)
            levels = torch.arange(size, dtype=x.dtype, device=x.device)
            parts.append((codes == levels).to(x.dtype))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def transform(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        return np.concatenate(
            [
                self(torch.as_tensor(x[i : i + batch_size])).numpy()
                for i in range(0, len(x), batch_size)
            ]
        )


class WithPreprocessing(nn.Module):
    """A model that takes encoded rows: preprocessing, then the network."""

    def __init__(self, preprocess: Preprocessor, network: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(x))


# -- serving: raw named inputs in front of the exported graph --------------------------------

ONNX_ML_OPSET = 3
_RAW_TO_DATATYPE = {"float": "FP32", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def input_datatype(column: ColumnSpec) -> str:
    """The OIP datatype a server takes for this column (numbers always as FP32)."""
    return "FP32" if column.kind == "numeric" else _RAW_TO_DATATYPE[column.raw_type]


def raw_feeds(spec: PreprocessSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    """Named raw inputs that encode back to ``x``; unseen codes become a value never seen in
    training (so a round trip exercises the reserved bucket)."""
    feeds = {}
    for i, column in enumerate(spec.columns):
        values = x[:, i]
        if column.kind == "numeric":
            feeds[column.name] = values.astype(np.float32)
            continue
        codes = np.nan_to_num(values).astype(np.int64)
        if column.raw_type == "string":
            lookup = np.array(["\x00unseen", *[str(c) for c in column.categories]], dtype=object)
            feeds[column.name] = lookup[codes]
        elif column.raw_type == "int":
            unseen = max([int(c) for c in column.categories] or [0]) + 1
            lookup = np.array([unseen, *[int(c) for c in column.categories]], dtype=np.int64)
            feeds[column.name] = lookup[codes]
        else:
            # A boolean has no unseen value: code 0 (missing in training) is served as False.
            lookup = np.array([False, *[bool(c) for c in column.categories]], dtype=np.bool_)
            feeds[column.name] = lookup[codes]
    return feeds


def encode_feeds(spec: PreprocessSpec, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The encoded rows the graph's front computes from named raw inputs (numpy, for checks)."""
    columns = []
    for column in spec.columns:
        values = np.asarray(feeds[column.name]).reshape(-1)
        if column.kind == "numeric":
            columns.append(values.astype(np.float32))
        else:
            columns.append(category_codes([_plain(v) for v in values.tolist()], column.categories))
    return np.stack(columns, axis=1)


def serving_front(spec: PreprocessSpec, *, opset: int, ir_version: int, output: str):
    """An ONNX graph from one named input per column to the encoded ``[batch, columns]`` FP32
    tensor named ``output``."""
    from onnx import TensorProto, helper

    nodes, inputs = [], []
    encoded = []
    shape_2d = helper.make_tensor("tp_shape_2d", TensorProto.INT64, [2], [-1, 1])
    for i, column in enumerate(spec.columns):
        name = column.name
        out = f"tp_col_{i}"
        if column.kind == "numeric":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch"]))
            nodes.append(helper.make_node("Reshape", [name, "tp_shape_2d"], [out]))
            encoded.append(out)
            continue
        codes = f"tp_codes_{i}"
        values = list(range(1, len(column.categories) + 1))
        if column.raw_type == "string":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["batch"]))
            nodes.append(
                helper.make_node(
                    "LabelEncoder",
                    [name],
                    [codes],
                    domain="ai.onnx.ml",
                    keys_strings=[str(c) for c in column.categories] or ["\x00"],
                    values_int64s=values or [0],
                    default_int64=UNSEEN_CODE,
                )
            )
        else:
            source = name
            if column.raw_type == "bool":
                inputs.append(helper.make_tensor_value_info(name, TensorProto.BOOL, ["batch"]))
                source = f"tp_int_{i}"
                nodes.append(helper.make_node("Cast", [name], [source], to=TensorProto.INT64))
            else:
                inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch"]))
            nodes.append(
                helper.make_node(
                    "LabelEncoder",
                    [source],
                    [codes],
                    domain="ai.onnx.ml",
                    keys_int64s=[int(c) for c in column.categories] or [-(2**62)],
                    values_int64s=values or [0],
                    default_int64=UNSEEN_CODE,
                )
            )
        as_float = f"tp_codes_f_{i}"
        nodes.append(helper.make_node("Cast", [codes], [as_float], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Reshape", [as_float, "tp_shape_2d"], [out]))
        encoded.append(out)
    nodes.append(helper.make_node("Concat", encoded, [output], axis=1))
    graph = helper.make_graph(
        nodes,
        "trainpipe_preprocess",
        inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", len(spec.columns)])],
        initializer=[shape_2d],
    )
    return helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", opset),
            helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET),
        ],
        ir_version=ir_version,
    )
