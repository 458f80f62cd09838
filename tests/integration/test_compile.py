"""The compiled KFP IR carries what a cluster needs: image, GPUs, /dev/shm, retries, secrets,
node selector and tolerations."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from trainpipe.config import load_config
from trainpipe.pipelines.training import compile_pipeline

TRAINING_TASKS = {"pretrain", "finetune"}
ALL_TASKS = {
    "validate-data",
    "pretrain",
    "finetune",
    "evaluate",
    "export-onnx",
    "gate",
    "register",
    "deploy",
}


def load_ir(path) -> tuple[dict, dict]:
    """The IR file holds two YAML documents: the pipeline spec and the platform (k8s) spec."""
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 2
    return documents[0], documents[1]


def walk_tasks(spec: dict) -> dict[str, dict]:
    """Every task in the root DAG and every nested DAG (dsl.If makes a sub-DAG)."""
    found: dict[str, dict] = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        found.update(dag["tasks"])
    return found


CLUSTER = [
    "cluster.image=registry.example.com/ml/trainpipe:9.9.9",
    "cluster.gpus_per_node=4",
    "cluster.shm_size=8Gi",
    "cluster.retries=3",
    "cluster.s3_secret_name=my-s3",
    "storage.uri=s3://bucket/prefix",
    "storage.endpoint_url=http://minio.minio:9000",
    'cluster.node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}',
    "cluster.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule},"
    " {key: spot, value: 'true', effect: NoExecute, tolerationSeconds: 30}]",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    compile_pipeline(load_config(None, CLUSTER), str(path))
    return load_ir(path)


def k8s_executor_for(spec: dict, platform: dict, task_name: str) -> dict:
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    component = spec["components"][walk_tasks(spec)[task_name]["componentRef"]["name"]]
    return executors[component["executorLabel"]]


def executor_for(spec: dict, task_name: str) -> dict:
    tasks = walk_tasks(spec)
    component = spec["components"][tasks[task_name]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def test_every_stage_is_in_the_dag_and_gated(compiled):
    spec, _ = compiled
    tasks = walk_tasks(spec)
    task_names = {name for name in tasks if not name.startswith("condition")}
    assert task_names == ALL_TASKS
    condition = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert "promote" in condition["triggerPolicy"]["condition"]
    gated = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gated) == {"register", "deploy"}


def test_every_component_runs_the_configured_image(compiled):
    spec, _ = compiled
    for name in ALL_TASKS:
        assert executor_for(spec, name)["image"] == "registry.example.com/ml/trainpipe:9.9.9"


def test_training_stages_request_gpus(compiled):
    spec, _ = compiled
    for name in ALL_TASKS:
        resources = executor_for(spec, name).get("resources", {})
        accelerator = resources.get("accelerator")
        if name in TRAINING_TASKS:
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert int(accelerator["resourceCount"]) == 4
        else:
            assert accelerator is None


def test_training_stages_retry(compiled):
    spec, _ = compiled
    tasks = walk_tasks(spec)
    for name in ALL_TASKS:
        policy = tasks[name].get("retryPolicy")
        if name in TRAINING_TASKS:
            assert policy["maxRetryCount"] == 3
            assert policy["backoffDuration"] == "60s"
        else:
            assert policy is None


def test_platform_spec_mounts_shm_and_secret(compiled):
    spec, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = walk_tasks(spec)
    for name in ALL_TASKS:
        label = spec["components"][tasks[name]["componentRef"]["name"]]["executorLabel"]
        k8s = executors[label]
        secrets = k8s["secretAsEnv"]
        assert secrets[0]["secretName"] == "my-s3"
        assert {m["envVar"] for m in secrets[0]["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        shm = [m for m in k8s.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        if name in TRAINING_TASKS:
            assert shm and shm[0]["medium"] == "Memory" and shm[0]["sizeLimit"] == "8Gi"
        else:
            assert not shm


def test_training_stages_select_and_tolerate_gpu_nodes(compiled):
    spec, platform = compiled
    for name in ALL_TASKS:
        k8s = k8s_executor_for(spec, platform, name)
        if name in TRAINING_TASKS:
            assert k8s["nodeSelector"]["labels"] == {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
            }
            assert k8s["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "spot",
                    "operator": "Equal",
                    "value": "true",
                    "effect": "NoExecute",
                    "tolerationSeconds": "30",
                },
            ]
        else:
            assert "nodeSelector" not in k8s and "tolerations" not in k8s


def test_multi_node_launchers_hold_no_gpus(tmp_path):
    """With num_nodes > 1 the TrainJob's pods train; the component pod only launches it."""
    cfg = load_config(
        None,
        [
            "cluster.num_nodes=4",
            "cluster.gpus_per_node=8",
            'cluster.node_selector={"pool": "gpu"}',
        ],
    )
    path = tmp_path / "p.yaml"
    compile_pipeline(cfg, str(path))
    spec, platform = load_ir(path)
    for name in TRAINING_TASKS:
        assert "accelerator" not in executor_for(spec, name).get("resources", {})
        k8s = k8s_executor_for(spec, platform, name)
        assert "nodeSelector" not in k8s and not k8s.get("emptyDirMounts")
        assert walk_tasks(spec)[name]["retryPolicy"]["maxRetryCount"] == 2


def test_endpoint_reaches_every_stage(compiled):
    spec, _ = compiled
    for name in ALL_TASKS:
        env = {e["name"]: e["value"] for e in executor_for(spec, name).get("env", [])}
        assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"


def test_credentials_only_by_secret_reference(compiled):
    spec, _ = compiled
    for name in ALL_TASKS:
        env = {e["name"] for e in executor_for(spec, name).get("env", [])}
        assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert "AKIA" not in yaml.safe_dump(spec)


def test_compile_cli_writes_ir(tmp_path):
    out = tmp_path / "p.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "trainpipe", "compile", "--output", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote" in done.stdout
    spec, _ = load_ir(out)
    assert spec["pipelineInfo"]["name"] == "trainpipe"
    assert spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]


def test_continual_ir_has_the_batch_cluster_settings_and_an_exit_handler(tmp_path):
    """The continual DAG's steps get the same image, GPUs, /dev/shm, retries and secrets as the
    batch ones (one helper shapes both); the lease release is an exit handler."""
    path = tmp_path / "continual.yaml"
    compile_pipeline(load_config(None, CLUSTER), str(path), continual=True)
    spec, platform = load_ir(path)
    assert spec["pipelineInfo"]["name"] == "trainpipe-continual"
    tasks = {
        name: task
        for name, task in walk_tasks(spec).items()
        if not name.startswith(("condition", "exit-handler"))
    }
    training = {name for name in tasks if name.startswith(("pretrain", "finetune"))}
    assert training == {"pretrain", "finetune", "finetune-2"}  # warm start and full retrain
    assert {"continual-plan", "continual-release", "evaluate", "export-onnx", "gate"} < set(tasks)
    assert {"register", "continual-finish", "continual-finish-2", "continual-finish-3"} < set(tasks)
    for name, task in tasks.items():
        container = executor_for(spec, name)
        k8s = k8s_executor_for(spec, platform, name)
        assert container["image"] == "registry.example.com/ml/trainpipe:9.9.9"
        assert k8s["secretAsEnv"][0]["secretName"] == "my-s3"
        accelerator = container.get("resources", {}).get("accelerator")
        shm = [m for m in k8s.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        if name in training:
            assert int(accelerator["resourceCount"]) == 4 and shm[0]["sizeLimit"] == "8Gi"
            assert task["retryPolicy"]["maxRetryCount"] == 3
        else:
            assert accelerator is None and not shm and "retryPolicy" not in task
    release = spec["root"]["dag"]["tasks"]["continual-release"]
    assert release["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert release["dependentTasks"] == ["exit-handler-1"]


def test_compile_cli_writes_the_continual_ir(tmp_path):
    out = tmp_path / "c.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "trainpipe", "compile", "--continual", "--output", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'trainpipe-continual'" in done.stdout
    spec, _ = load_ir(out)
    assert spec["pipelineInfo"]["name"] == "trainpipe-continual"
