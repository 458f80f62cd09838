"""A user's own table, end to end without mocks: the real validate_data stage encodes a Parquet
table with string, boolean and integer categories and missing numbers; the preprocessing is
fitted on the training split; a small network with it inside is exported by the real export
stage; the real OIP server takes raw named columns (BYTES strings, null for missing, unseen
categories) over HTTP and answers like torch.
"""

from __future__ import annotations

import math

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.support.digits_model import config_json, finetune_artifact
from trainpipe.artifacts import ArtifactSet
from trainpipe.data.datasets import with_features
from trainpipe.data.preprocess import CLIP, Preprocessor, encode_feeds, raw_feeds
from trainpipe.data.stored import load_validated
from trainpipe.export.onnx_export import ort_session
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import classifier_payload, from_bytes, load_classifier
from trainpipe.models.config import ModelConfig
from trainpipe.models.heads import Blend
from trainpipe.serve import ServeConfig, start_in_background
from trainpipe.serve.client import infer_outputs
from trainpipe.stages.context import make_context
from trainpipe.stages.export import run_export
from trainpipe.stages.validate import run_validate
from trainpipe.train.linear import fit_linear, linear_module
from trainpipe.train.trees import fit_trees, tree_module

MODEL_CONFIG = ModelConfig(name="mlp", hidden_dim=16, embed_dim=8)
BLEND_WEIGHT = 0.4
TREES_WEIGHT = 0.3
TRAINING = {"batch_size": 16, "steps_per_epoch": 13, "steps": 780, "epochs": 60}


def write_table(path, n: int = 400, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], n)
    active = rng.random(n) > 0.5
    seats = rng.integers(1, 4, n)
    income = rng.lognormal(10, 0.5, n)
    income[:3] = 1e9  # outliers must not dominate the scale
    missing = rng.random(n) < 0.2
    label = np.where((region == "north") ^ active, "yes", "no")
    table = pa.table(
        {
            "region": region,
            "active": active,
            "seats": seats,
            "income": [None if m else float(v) for v, m in zip(income, missing, strict=True)],
            "age": rng.normal(40, 10, n),  # keeps rows distinct (no leakage between splits)
            "churn": label,
        }
    )
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    write_table(root / "churn.parquet")
    cfg = config_json(
        f"file://{root}/store",
        data={"source": str(root / "churn.parquet"), "label_column": "churn"},
        registry={"model_name": "churn"},
    )
    _, data_uri = run_validate(cfg, "t1")
    dataset = load_validated(make_context(cfg, "t1").open(data_uri))
    torch.manual_seed(0)
    width = dataset.preprocess.feature_width
    network = Classifier(build_encoder(MODEL_CONFIG, [width]), dataset.num_classes).eval()
    # What finetune ships for a table: the network blended with the linear model and the trees
    # of the same features, so every check below (parity, the served graph, the server) covers
    # the blend.
    features = with_features(dataset)
    fit = fit_linear(
        features.train.x,
        features.train.y,
        features.validation.x,
        features.validation.y,
        num_classes=dataset.num_classes,
    )
    trees = tree_module(
        fit_trees(features.train.x, features.train.y, num_classes=dataset.num_classes),
        dataset.num_classes,
    )
    blended = Blend(
        network,
        linear_module(fit, width),
        BLEND_WEIGHT,
        "probability",
        trees=trees,
        trees_weight=TREES_WEIGHT,
    ).eval()
    writer = make_context(cfg, "t1").writer("finetune")
    payload = classifier_payload(
        blended,
        MODEL_CONFIG,
        [width],
        dataset.label_names,
        dataset.preprocess,
        blend={"chosen_by": "this test"},
        training=TRAINING,
    )
    from trainpipe.models.checkpoint import to_bytes

    writer.put_bytes("model.pt", to_bytes(payload))
    finetune_uri = writer.commit()
    export_uri = run_export(cfg, "t1", data_uri, finetune_uri)
    model = load_classifier(from_bytes(ArtifactSet.open(finetune_uri).get_bytes("model.pt")))
    return dataset, model, export_uri


def test_preprocessing_is_fitted_on_train_only(exported):
    dataset, _, _ = exported
    columns = {c.name: c for c in dataset.preprocess.columns}
    assert [c.kind for c in dataset.preprocess.columns] == [
        "categorical",
        "categorical",
        "categorical",
        "numeric",
        "numeric",
    ]
    assert columns["region"].raw_type == "string"
    assert sorted(columns["region"].categories) == ["east", "north", "south"]
    assert columns["active"].raw_type == "bool" and columns["seats"].raw_type == "int"
    income = columns["income"]
    train_income = dataset.train.x[:, 3]
    assert income.indicator  # the column had missing values in training
    assert income.center == pytest.approx(float(np.nanmedian(train_income)), rel=1e-6)
    all_income = np.concatenate([s.x[:, 3] for s in dataset.splits().values()])
    assert income.center != pytest.approx(float(np.nanmedian(all_income)), rel=1e-9)
    assert np.isnan(dataset.train.x[:, 3]).any()


def test_preprocessor_imputes_scales_clips_and_one_hots(exported):
    dataset, _, _ = exported
    spec = dataset.preprocess
    pre = Preprocessor(spec)
    income = spec.columns[3]
    rows = np.array(
        [
            [1, 1, 1, np.nan, 40],  # missing number -> median, indicator 1
            [0, 1, 1, 1e9, 40],  # unseen category -> bucket 0; outlier -> clipped
            [2, 2, 3, income.center + income.scale, 40],
        ],
        dtype=np.float32,
    )
    features = pre(torch.as_tensor(rows)).numpy()
    assert features.shape == (3, spec.feature_width)
    # numeric block first (income, age), then the indicator of income, then the one-hots
    scaled, indicator = features[:, 0], features[:, 2]
    np.testing.assert_allclose(scaled, [0.0, CLIP, 1.0], atol=1e-5)
    np.testing.assert_array_equal(indicator, [1.0, 0.0, 0.0])
    region = features[:, 3:7]  # bucket 0 + three regions
    np.testing.assert_array_equal(region.argmax(1), [1, 0, 2])
    assert region.sum(1).tolist() == [1.0, 1.0, 1.0]


def test_model_json_describes_named_raw_inputs(exported):
    _, _, export_uri = exported
    meta = ArtifactSet.open(export_uri).get_json("model.json")
    assert meta["inputs"] == [
        {"name": "region", "datatype": "BYTES", "shape": [-1]},
        {"name": "active", "datatype": "BOOL", "shape": [-1]},
        {"name": "seats", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP32", "shape": [-1], "allow_missing": True},
        {"name": "age", "datatype": "FP32", "shape": [-1], "allow_missing": True},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities", "label"]
    assert {c["column"] for c in meta["preprocessing"]["columns"]} == {
        "region",
        "active",
        "seats",
        "income",
        "age",
    }
    assert meta["blend"] == {
        "chosen_by": "this test",
        "linear_weight": BLEND_WEIGHT,
        "trees_weight": TREES_WEIGHT,
    }
    assert meta["training"] == TRAINING  # the fine-tuning schedule, from model.pt
    parity = ArtifactSet.open(export_uri).get_json("parity.json")
    assert parity["serving_graph"]["max_abs_error"] < 1e-4
    assert parity["serving_graph"]["inputs"] == ["active", "age", "income", "region", "seats"]


def test_served_graph_matches_torch_on_raw_rows_with_unseen_and_missing(exported):
    dataset, model, export_uri = exported
    session = ort_session(ArtifactSet.open(export_uri).get_bytes("model.onnx"))
    feeds = raw_feeds(dataset.preprocess, dataset.test.x)
    feeds["region"][:5] = "atlantis"  # never seen in training
    feeds["seats"][5:10] = 99
    feeds["income"][10:20] = np.nan
    logits, probabilities, label = session.run(None, feeds)
    encoded = encode_feeds(dataset.preprocess, feeds)
    assert (encoded[:5, 0] == 0).all() and (encoded[5:10, 2] == 0).all()
    with torch.inference_mode():
        expected = model(torch.as_tensor(encoded)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # The graph carries the blend: the network, the linear model or the trees alone answer
    # differently.
    with torch.inference_mode():
        features = model.preprocess(torch.as_tensor(encoded))
        blend = model.network
        parts = [
            torch.softmax(m(features), 1).numpy()
            for m in (blend.network, blend.linear, blend.trees)
        ]
    blended = (
        (1 - BLEND_WEIGHT - TREES_WEIGHT) * parts[0]
        + BLEND_WEIGHT * parts[1]
        + TREES_WEIGHT * parts[2]
    )
    np.testing.assert_allclose(probabilities, blended, atol=1e-5)
    assert min(np.abs(probabilities - p).max() for p in parts) > 1e-2
    assert label.tolist() == [dataset.label_names[i] for i in expected.argmax(1)]


def test_real_server_takes_named_columns_bytes_nulls_and_unseen(exported):
    dataset, model, export_uri = exported
    config = ServeConfig(port=0, log_level="warning")
    rows = {
        "region": ["north", "atlantis", None],
        "active": [True, False, True],
        "seats": [1, 2, 77],
        "income": [20000.0, None, math.nan],
        "age": [30.0, 50.0, 40.0],
    }
    with start_in_background(export_uri, config) as running:
        body = {
            "inputs": [
                {"name": "region", "datatype": "BYTES", "shape": [3], "data": rows["region"]},
                {"name": "active", "datatype": "BOOL", "shape": [3], "data": rows["active"]},
                {"name": "seats", "datatype": "INT64", "shape": [3], "data": rows["seats"]},
                {"name": "income", "datatype": "FP32", "shape": [3], "data": [20000.0, None, None]},
                {"name": "age", "datatype": "FP32", "shape": [3], "data": rows["age"]},
            ]
        }
        response = httpx.post(f"{running.url}/v2/models/churn/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert set(outputs) == {"logits", "probabilities", "label"}
        assert outputs["label"]["datatype"] == "BYTES"
        client_outputs = infer_outputs(
            running.url,
            "churn",
            {
                "region": np.array(["north", "atlantis", ""], dtype=object),
                "active": np.array(rows["active"]),
                "seats": np.array(rows["seats"], dtype=np.int64),
                "income": np.array(rows["income"], dtype=np.float32),
                "age": np.array(rows["age"], dtype=np.float32),
            },
        )
        refused = httpx.post(
            f"{running.url}/v2/models/churn/infer",
            json={
                "inputs": [
                    *body["inputs"][:3],
                    {"name": "income", "datatype": "FP32", "shape": [3], "data": [1, 2, "x"]},
                    body["inputs"][4],
                ]
            },
        )
    feeds = {
        "region": np.array(["north", "atlantis", ""], dtype=object),
        "active": np.array(rows["active"]),
        "seats": np.array(rows["seats"], dtype=np.int64),
        "income": np.array(rows["income"], dtype=np.float32),
        "age": np.array(rows["age"], dtype=np.float32),
    }
    with torch.inference_mode():
        expected = model(torch.as_tensor(encode_feeds(dataset.preprocess, feeds))).numpy()
    served = np.asarray(outputs["logits"]["data"], dtype=np.float32).reshape(3, -1)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    np.testing.assert_allclose(client_outputs["logits"], expected, atol=1e-4)
    assert outputs["label"]["data"] == [dataset.label_names[i] for i in expected.argmax(1)]
    assert refused.status_code == 400 and "income" in refused.json()["error"]


def test_deploy_style_client_round_trip_on_the_test_split(exported):
    """What the deploy stage sends: every test row as raw named columns."""
    dataset, model, export_uri = exported
    with start_in_background(export_uri, ServeConfig(port=0, log_level="warning")) as running:
        served = infer_outputs(
            running.url,
            "churn",
            raw_feeds(dataset.preprocess, dataset.test.x[:32]),
            output_names=["logits"],
        )["logits"]
    with torch.inference_mode():
        expected = model(torch.as_tensor(dataset.test.x[:32])).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_finetune_artifact_helper_still_serves_images(tmp_path):
    """Images keep the single FP32 block (no preprocessing, no named inputs)."""
    from tests.support.digits_model import train_digits_mlp, validated_data

    cfg = config_json(f"file://{tmp_path}")
    data_uri = validated_data(cfg, "img")
    dataset = load_validated(make_context(cfg, "img").open(data_uri))
    assert dataset.preprocess is None
    model = train_digits_mlp(dataset, steps=5)
    export_uri = run_export(cfg, "img", data_uri, finetune_artifact(cfg, "img", model, dataset))
    meta = ArtifactSet.open(export_uri).get_json("model.json")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
