"""The tune stage in the DAG: the compiled IR fans trial workers out as pods with the training
stages' cluster settings, and through kfp.local the best parameters reach fine-tuning."""

from __future__ import annotations

import math

import pytest

from tests.integration.test_compile import k8s_executor_for, load_ir, walk_tasks
from tests.integration.test_local_run import run_id_of, trainpipe
from trainpipe.config import load_config
from trainpipe.pipelines.training import compile_pipeline
from trainpipe.storage import open_store

CLUSTER = [
    "cluster.gpus_per_node=4",
    "cluster.shm_size=8Gi",
    "cluster.retries=3",
    'cluster.node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}',
    "cluster.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    cfg = load_config(None, [*CLUSTER, "tune.enabled=true", "tune.pods=3"])
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    compile_pipeline(cfg, str(path))
    return load_ir(path)


def test_trial_workers_are_a_parallel_for_of_pods(compiled):
    spec, _ = compiled
    tasks = walk_tasks(spec)
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"tune-worker"}
    pod = body["tune-worker"]["inputs"]["parameters"]["pod"]
    assert pod["componentInputParameter"] == loop["parameterIterator"]["itemInput"]
    # The collecting task takes every worker's output, and finetune takes the tune result.
    collected = tasks["tune"]["inputs"]["parameters"]["worker_uris"]["taskOutputParameter"]
    assert collected["producerTask"].startswith("for-loop")
    tune_uri = tasks["finetune"]["inputs"]["parameters"]["tune_uri"]["taskOutputParameter"]
    assert tune_uri["producerTask"] == "tune-search"
    assert "tune-search" in tasks["finetune"].get("dependentTasks", [])


def test_trial_workers_get_the_training_cluster_settings(compiled):
    spec, platform = compiled
    tasks = walk_tasks(spec)
    worker = tasks["tune-worker"]
    component = spec["components"][worker["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    accelerator = container["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert int(accelerator["resourceCount"]) == 4
    assert worker["retryPolicy"]["maxRetryCount"] == 3
    k8s = k8s_executor_for(spec, platform, "tune-worker")
    shm = [m for m in k8s["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm and shm[0]["medium"] == "Memory" and shm[0]["sizeLimit"] == "8Gi"
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    # The collecting step only reads JSON: no GPU, no retry.
    collect = k8s_executor_for(spec, platform, "tune")
    assert not [m for m in collect.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
    assert "retryPolicy" not in tasks["tune"]


def test_without_tune_the_dag_has_no_tune_tasks(tmp_path):
    path = tmp_path / "pipeline.yaml"
    compile_pipeline(load_config(None, CLUSTER), str(path))
    spec, _ = load_ir(path)
    assert not [name for name in walk_tasks(spec) if name.startswith("tune")]


TINY_TUNE = [
    *("--set", "pretrain.epochs=2", "--set", "finetune.epochs=4"),
    *("--set", "finetune.compare_with_scratch=false", "--set", "finetune.label_fraction=1.0"),
    *("--set", "tune.trials=4", "--set", "tune.epochs=3", "--set", "tune.parallelism=2"),
    *("--set", "gate.min_value=0.0"),
]


@pytest.mark.slow
def test_the_best_config_reaches_fine_tuning(tmp_path):
    done = trainpipe("run", "--output", str(tmp_path), "--set", "tune.enabled=true", *TINY_TUNE)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tune: best trial #" in done.stdout and "vs default" in done.stdout
    run_id = run_id_of(done.stdout)
    store = open_store(str(tmp_path))
    tuned = store.get_json(f"runs/{run_id}/tune/best.json")
    manifest = store.get_json(f"runs/{run_id}/finetune/manifest.json")
    summary = manifest["summary"]
    assert summary["tuned_params"] == tuned["params"]
    assert manifest["lineage"]["inputs"]["tune"].endswith(f"runs/{run_id}/tune")
    # The model trained with the tuned batch size (null: the automatic one): steps per epoch
    # follow from it.
    batch = tuned["params"]["finetune.batch_size"]
    assert batch is None or summary["batch_size"] == batch
    assert summary["steps_per_epoch"] == math.ceil(
        summary["labelled_examples"] / summary["batch_size"]
    )
    assert summary["steps"] == summary["epochs"] * summary["steps_per_epoch"]
    trials = store.get_json(f"runs/{run_id}/tune/trials.json")["trials"]
    assert len([t for t in trials if t["state"] in ("complete", "pruned")]) >= 4
    assert {t["worker"] for t in trials} == {"w0-0", "w0-1"}  # two processes shared the study
    report = store.get_bytes(f"runs/{run_id}/tune/report.html").decode()
    assert "Best so far" in report and "Metric per parameter" in report


@pytest.mark.slow
def test_trainpipe_tune_prints_the_best_parameters(tmp_path):
    done = trainpipe("tune", "--output", str(tmp_path), *TINY_TUNE, "--set", "tune.sampler=random")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\ntune " in done.stdout and "\nfinetune" not in done.stdout  # stops after tune
    command = next(line for line in done.stdout.splitlines() if line.startswith("train with"))
    assert "--set finetune.lr=" in command and "--set finetune.batch_size=" in command


@pytest.mark.slow
def test_population_based_training_through_the_stage(tmp_path):
    done = trainpipe(
        "tune",
        "--output",
        str(tmp_path),
        *("--set", "pretrain.epochs=1", "--set", "tune.strategy=pbt", "--set", "tune.epochs=4"),
        *("--set", "tune.pbt.population=4", "--set", "tune.parallelism=2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(pbt)" in done.stdout
    run_id = run_id_of(done.stdout)
    store = open_store(str(tmp_path))
    trials = store.get_json(f"runs/{run_id}/tune/trials.json")["trials"]
    assert len(trials) == 4 and all(t["epochs"] == 4 for t in trials)
    assert sorted(int(k) for k in trials[0]["intermediate"]) == [2, 4]  # one value per segment
    state = store.get_json(f"runs/{run_id}/tune-study/pbt/state.json")
    assert state["round"] == 2
    weights = store.list(f"runs/{run_id}/tune-study/pbt/weights/")
    assert len(weights) == 4 * 2  # every member's weights after every segment
