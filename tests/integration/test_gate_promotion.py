"""Champion against challenger with real models: the stages evaluate, export, gate and register
run in this process on models that trainpipe's Trainer really trains (digits as a pixel table,
a few epochs), against a real registry on disk.

- the first model is promoted (no champion yet), a worse one trained on partly shuffled labels
  is rejected against it, a better one is promoted;
- a champion that changes between the gate and register makes register fail, changing nothing;
- a corrupt champion pointer or champion model stops evaluation with one clear line.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainpipe.config import load_config
from trainpipe.registry import Registry
from trainpipe.stages.entry import stage_entry
from trainpipe.stages.evaluate import run_evaluate
from trainpipe.stages.export import run_export
from trainpipe.stages.finetune import run_finetune
from trainpipe.stages.gate import run_gate
from trainpipe.stages.pretrain import run_pretrain
from trainpipe.stages.register import run_register
from trainpipe.stages.validate import run_validate
from trainpipe.storage import open_store

pytestmark = pytest.mark.slow

MODEL = "digits-table"
SHUFFLED_SHARE = 0.6


def write_split(folder, name, x, y):
    columns = {f"p{i}": x[:, i] for i in range(x.shape[1])}
    pq.write_table(pa.table({**columns, "digit": y}), folder / f"{name}.parquet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Digits as a pre-split pixel table: ``clean`` and ``noisy`` share validation and test;
    ``noisy`` has 60% of its training labels shuffled."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    rest, test = train_test_split(np.arange(len(y)), test_size=360, random_state=0, stratify=y)
    train, val = train_test_split(rest, test_size=270, random_state=0, stratify=y[rest])
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    noisy_y = y[train].copy()
    chosen = rng.choice(len(train), size=int(SHUFFLED_SHARE * len(train)), replace=False)
    noisy_y[chosen] = rng.permutation(noisy_y[chosen])
    for kind, train_y in (("clean", y[train]), ("noisy", noisy_y)):
        folder = root / kind
        folder.mkdir()
        write_split(folder, "train", x[train], train_y)
        write_split(folder, "validation", x[val], y[val])
        write_split(folder, "test", x[test], y[test])
    return root


def settings(store_uri: str, source, epochs: int, *extra: str) -> str:
    return load_config(
        overrides=[
            f"storage.uri={store_uri}",
            f"data.source={source}",
            "data.label_column=digit",
            f"registry.model_name={MODEL}",
            "model.hidden_dim=64",
            "model.embed_dim=32",
            "pretrain.enabled=false",
            f"finetune.epochs={epochs}",
            "finetune.label_fraction=1.0",
            "finetune.compare_with_scratch=false",
            # The test sets how much each model trains through epochs alone.
            "finetune.min_steps=0",
            "finetune.ensemble_size=1",
            # A blend with the linear fit would make the 3- and 15-epoch models alike.
            "finetune.blend_with_linear=false",
            "gate.max_gap_to_linear=null",  # 3-epoch models are deliberately weak
            "gate.min_value=0.5",
            "gate.slice_columns=[p36]",
            "gate.bootstrap_resamples=300",
            *extra,
        ]
    ).to_json()


def train_and_gate(config_json: str, run_id: str) -> dict:
    """validate -> pretrain (off) -> finetune -> evaluate -> export -> gate, as the DAG does."""
    _, data_uri = run_validate(config_json, run_id)
    pretrain_uri = run_pretrain(config_json, run_id, data_uri)
    finetune_uri = run_finetune(config_json, run_id, data_uri, pretrain_uri)
    evaluate_uri = run_evaluate(config_json, run_id, data_uri, finetune_uri)
    export_uri = run_export(config_json, run_id, data_uri, finetune_uri)
    decision, gate_uri = run_gate(config_json, run_id, evaluate_uri, export_uri)
    store = open_store(json.loads(config_json)["storage"]["uri"])
    return {
        "decision": decision,
        "gate": gate_uri,
        "evaluate": evaluate_uri,
        "export": export_uri,
        "record": store.get_json(f"runs/{run_id}/gate/decision.json"),
    }


def rule(record: dict, name: str) -> dict:
    return next(r for r in record["rules"] if r["rule"] == name)


def test_worse_challenger_is_rejected_and_better_one_promoted(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAINPIPE_GIT_SHA", "0123abc")
    uri = f"file://{tmp_path / 'store'}"
    registry = Registry(open_store(uri), MODEL)

    # 1. First model: nothing to beat; promoted and registered with everything it came from.
    first = settings(uri, data / "clean", 3)
    run = train_and_gate(first, "r1")
    assert run["decision"] == "promote", run["record"]["reason"]
    assert rule(run["record"], "beats_champion")["detail"].startswith("no champion yet")
    assert run["record"]["champion"] is None
    run_register(first, "r1", run["export"], run["evaluate"], run["gate"])
    assert registry.champion().version == "1"
    version = registry.open_version("1")
    assert set(version.names()) >= {
        "model.onnx", "model.json", "model.pt", "metrics.json", "comparison.json",
        "report.html", "decision.json", "config.json", "dataset.json", "lineage.json",
    }  # fmt: skip
    lineage = version.get_json("lineage.json")
    assert lineage["git_sha"] == "0123abc" and lineage["code_version"]
    assert lineage["data"].endswith("runs/r1/validate_data")
    assert lineage["pretrain"].endswith("runs/r1/pretrain")
    assert lineage["data_source"].endswith("clean")
    assert version.get_json("config.json")["finetune"]["epochs"] == 3
    first_accuracy = version.get_json("metrics.json")["accuracy"]

    # 2. Same recipe on partly shuffled labels: worse on the shared test split, rejected.
    noisy = settings(uri, data / "noisy", 3)
    run = train_and_gate(noisy, "r2")
    beats = rule(run["record"], "beats_champion")
    assert run["decision"] == "reject", run["record"]["reason"]
    assert not beats["passed"] and beats["values"]["champion_version"] == "1"
    assert beats["values"]["champion"] == pytest.approx(first_accuracy, abs=1e-9)
    assert beats["values"]["difference_interval"]["upper"] < 0  # worse beyond resampling noise
    assert "vs champion v1" in run["record"]["reason"]
    with pytest.raises(SystemExit):
        stage_entry(run_register)(noisy, "r2", run["export"], run["evaluate"], run["gate"])
    assert "the gate rejected run r2" in capsys.readouterr().err
    assert registry.versions() == ["1"] and registry.champion().version == "1"
    report = open_store(uri).get_bytes("runs/r2/gate/report.html").decode()
    assert "banner reject" in report and "p36 in [" in report

    # 3. Clean labels and more epochs: beats the champion, promoted; v1 becomes previous.
    better = settings(uri, data / "clean", 15)
    run = train_and_gate(better, "r3")
    assert run["decision"] == "promote", run["record"]["reason"]
    assert rule(run["record"], "beats_champion")["values"]["difference"] > 0
    assert run["record"]["champion"]["version"] == "1"
    run_register(better, "r3", run["export"], run["evaluate"], run["gate"])
    champion = registry.champion()
    assert (champion.version, champion.previous_version) == ("2", "1")

    # 4. The champion changes between this run's gate and its register: nothing changes.
    # Run r4 re-evaluates r3's model against itself (now the champion): a tie, which "not
    # worse" (min_improvement 0) passes.
    data_uri, finetune_uri = (
        open_store(run["evaluate"]).get_json("manifest.json")["lineage"]["inputs"][k]
        for k in ("data", "model")
    )
    evaluate_uri = run_evaluate(better, "r4", data_uri, finetune_uri)
    decision, gate_uri = run_gate(better, "r4", evaluate_uri, run["export"])
    assert decision == "promote"
    registry.promote("1", reason="a person promotes by hand meanwhile")
    pointer = open_store(uri).get_bytes(f"registry/{MODEL}/champion.json")
    with pytest.raises(SystemExit):
        stage_entry(run_register)(better, "r4", run["export"], evaluate_uri, gate_uri)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"trainpipe: registry error: the champion of {MODEL} changed since the gate decided (the "
        "gate compared against version 2, now it is version 1); nothing was registered or "
        "promoted, rerun the pipeline"
    )
    assert open_store(uri).get_bytes(f"registry/{MODEL}/champion.json") == pointer
    assert registry.versions() == ["1", "2"]


def test_corrupt_champion_stops_evaluation_and_changes_nothing(data, tmp_path, capsys):
    uri = f"file://{tmp_path / 'store'}"
    store = open_store(uri)
    config_json = settings(uri, data / "clean", 1, "gate.bootstrap_resamples=0")
    _, data_uri = run_validate(config_json, "r1")
    finetune_uri = run_finetune(
        config_json, "r1", data_uri, run_pretrain(config_json, "r1", data_uri)
    )
    export_uri = run_export(config_json, "r1", data_uri, finetune_uri)
    registry = Registry(store, MODEL)
    exported = open_store(export_uri)
    files = {name: exported.get_bytes(name) for name in ("model.onnx", "model.json")}
    registry.register(files, run_id="r0", lineage={}, summary={})
    registry.promote("1", reason="setup")

    pointer_key = f"registry/{MODEL}/champion.json"
    store.put_bytes(pointer_key, b'{"uri": "no version"}')
    capsys.readouterr()
    with pytest.raises(SystemExit):
        stage_entry(run_evaluate)(config_json, "r1", data_uri, finetune_uri)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "champion.json is corrupt (it has no 'version' field)" in err[0]
    assert "registry promote VERSION --force" in err[0]
    assert store.get_bytes(pointer_key) == b'{"uri": "no version"}'
    assert not store.exists("runs/r1/evaluate/manifest.json")

    registry.promote("1", reason="repair", force=True)
    onnx_key = f"registry/{MODEL}/versions/1/model.onnx"
    store.put_bytes(onnx_key, store.get_bytes(onnx_key)[:-10] + b"0123456789")
    with pytest.raises(SystemExit):
        stage_entry(run_evaluate)(config_json, "r1", data_uri, finetune_uri)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.onnx does not match its manifest" in err[0]
    assert not store.exists("runs/r1/evaluate/manifest.json")
