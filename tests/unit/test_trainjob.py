"""Multi-node training through Kubeflow Trainer, against an HTTP-level fake Kubernetes API.

No cluster can run here: tests/support/fake_kube.py answers on loopback like the API server
(TrainJob create/get/delete, pod lists, pod logs) and records each request; the real kubernetes
client talks HTTP to it. The fake's scripted statuses stand in for the Trainer controller.
"""

from __future__ import annotations

import json
import os
import re

import kubernetes
import pytest

from tests.support.fake_kube import FakeKube
from trainpipe.config import load_config
from trainpipe.errors import TrainingError
from trainpipe.kube import KubeError, api_client
from trainpipe.stages import pod
from trainpipe.train.trainjob import (
    CONFIG_ENV,
    JOBSET_LABEL,
    TrainJobRunner,
    build_trainjob,
    trainjob_name,
)

RUN_ID = "20260101-120000-abc123"
JOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/trainpipe/trainjobs"
COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}
RUNNING = {"conditions": [{"type": "Created", "status": "True", "reason": "JobsCreated"}]}


@pytest.fixture
def kube():
    fake = FakeKube()
    yield fake
    fake.close()


def runner_for(kube: FakeKube) -> TrainJobRunner:
    client = api_client(kubernetes.client.Configuration(host=kube.url))
    return TrainJobRunner(client, poll_s=0.01, delete_timeout_s=2)


def multi_node_config(**extra: str):
    overrides = {
        "cluster.num_nodes": "4",
        "cluster.gpus_per_node": "8",
        "cluster.image": "registry.example.com/trainpipe:1.2.3",
        "cluster.training_runtime": "trainpipe-torch-distributed",
        "cluster.node_selector": '{"pool": "h100"}',
        "cluster.tolerations": "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        "storage.uri": "s3://bucket/prefix",
        "storage.endpoint_url": "http://minio:9000",
        **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def manifest(cfg=None, run_id: str = RUN_ID, stage: str = "pretrain") -> dict:
    entry = ["--module", pod.MODULE, *pod.command(stage, run_id, {"data_uri": "s3://b/d"})]
    return build_trainjob(cfg or multi_node_config(), stage=stage, run_id=run_id, entry=entry)


def test_names_are_deterministic_dns_labels():
    uuid = "8f2e4a1c-7d3b-4e5f-9a6b-0c1d2e3f4a5b"
    assert trainjob_name(RUN_ID, "pretrain") == "pretrain-20260101-120000-abc123"
    long = trainjob_name(uuid, "finetune")
    assert long == trainjob_name(uuid, "finetune")
    assert long != trainjob_name(uuid, "pretrain")
    assert long != trainjob_name(uuid.replace("5b", "5c"), "finetune")
    for name in (long, trainjob_name("Run_With.Odd/Chars", "pretrain")):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40


def test_creates_the_trainjob_streams_logs_and_completes(kube, capsys):
    name = trainjob_name(RUN_ID, "pretrain")
    kube.status_script[f"{JOBS}/{name}"] = [RUNNING, RUNNING, COMPLETE]
    for node in range(2):
        pod = f"{name}-node-0-{node}-x1"
        kube.add_pod(pod, {JOBSET_LABEL: name})
        kube.logs[pod] = [f"epoch 1 loss 0.{node}\n", "epoch 2 loss 0.0", "1\n"]

    job = runner_for(kube).run(manifest())

    assert job["status"] == COMPLETE
    (create,) = kube.server.matching("POST", JOBS)
    body = create.body
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["metadata"]["name"] == name and body["metadata"]["namespace"] == "trainpipe"
    assert body["metadata"]["labels"]["trainpipe.dev/stage"] == "pretrain"
    assert body["metadata"]["annotations"]["trainpipe.dev/run-id"] == RUN_ID
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "trainpipe-torch-distributed",
    }
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["image"] == "registry.example.com/trainpipe:1.2.3"
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 8}
    assert trainer["command"] == [
        "torchrun", "--module", "trainpipe.stages.pod", "pretrain",
        "--run-id", RUN_ID, "--input", "data_uri=s3://b/d",
    ]  # fmt: skip
    env = {e["name"]: e for e in trainer["env"]}
    inner = json.loads(env[CONFIG_ENV]["value"])
    assert inner["cluster"]["num_nodes"] == 1  # the job's nodes train, they do not launch again
    assert inner["storage"]["uri"] == "s3://bucket/prefix"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "trainpipe-s3"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert spec["podTemplateOverrides"] == [
        {
            "targetJobs": [{"name": "node"}],
            "spec": {
                "nodeSelector": {"pool": "h100"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        }
    ]

    pod_lists = kube.server.matching("GET", "/api/v1/namespaces/trainpipe/pods")
    assert pod_lists[0].query["labelSelector"] == f"{JOBSET_LABEL}={name}"
    log_requests = [r for r in kube.requests if r.path.endswith("/log")]
    assert {r.query["container"] for r in log_requests} == {"node"}
    assert {r.query["follow"].lower() for r in log_requests} == {"true"}
    out = capsys.readouterr().out
    assert f"[{name}-node-0-0-x1] epoch 1 loss 0.0" in out
    assert f"[{name}-node-0-1-x1] epoch 2 loss 0.01" in out  # lines split across chunks rejoin
    assert "completed" in out


def test_a_retried_step_reattaches_instead_of_creating_a_second_job(kube, capsys):
    body = manifest()
    path = f"{JOBS}/{body['metadata']['name']}"
    kube.put(path, body)  # created by the first attempt, still running
    kube.status_script[path] = [RUNNING, COMPLETE]

    runner_for(kube).run(manifest())

    creates = kube.server.matching("POST", JOBS)
    assert len(creates) == 1  # answered 409 AlreadyExists
    assert not kube.server.matching("DELETE", JOBS)
    assert len(kube.objects) == 1
    assert "re-attaching" in capsys.readouterr().out


def test_failure_carries_the_jobs_message_and_the_failed_container(kube):
    name = trainjob_name(RUN_ID, "pretrain")
    failed = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "JobsFailed",
                "message": "jobset failed: job node-0 has failed",
            }
        ]
    }
    kube.status_script[f"{JOBS}/{name}"] = [RUNNING, failed]
    kube.add_pod(f"{name}-node-0-1", {JOBSET_LABEL: name}, phase="Failed", exit_code=137,
                 reason="OOMKilled")  # fmt: skip
    kube.logs[f"{name}-node-0-1"] = ["Killed\n"]

    with pytest.raises(TrainingError) as raised:
        runner_for(kube).run(manifest())

    message = str(raised.value)
    assert f"TrainJob trainpipe/{name} failed: JobsFailed: jobset failed" in message
    assert f"pod {name}-node-0-1: OOMKilled, exit code 137" in message
    assert "\n" not in message


def test_a_job_that_failed_in_an_earlier_attempt_is_replaced(kube):
    body = manifest()
    path = f"{JOBS}/{body['metadata']['name']}"
    kube.put(path, {**body, "status": {"conditions": [{"type": "Failed", "status": "True"}]}})
    kube.on_create = lambda created_path, _: kube.status_script.__setitem__(
        created_path, [RUNNING, COMPLETE]
    )

    runner_for(kube).run(manifest())

    methods = [r.method for r in kube.requests if r.path.startswith(JOBS)]
    assert methods[:3] == ["POST", "GET", "DELETE"]
    assert methods.count("POST") == 2
    (delete,) = kube.server.matching("DELETE", JOBS)
    assert delete.body["propagationPolicy"] == "Foreground"


def test_a_job_of_another_run_is_not_adopted(kube):
    other = manifest(run_id="someone-else")
    other["metadata"]["name"] = trainjob_name(RUN_ID, "pretrain")
    kube.put(f"{JOBS}/{other['metadata']['name']}", other)
    with pytest.raises(KubeError, match="belongs to run 'someone-else'"):
        runner_for(kube).run(manifest())


def test_missing_trainer_crd_is_one_clear_line(kube):
    kube.missing_prefixes.add("/apis/trainer.kubeflow.org/")  # Trainer is not installed
    with pytest.raises(KubeError, match=r"cannot create TrainJob .*404 NotFound.*is installed"):
        runner_for(kube).run(manifest())


def test_unreachable_api_server_is_one_clear_line():
    client = api_client(kubernetes.client.Configuration(host="http://127.0.0.1:9"))
    with pytest.raises(KubeError, match="cannot reach the Kubernetes API"):
        TrainJobRunner(client, poll_s=0.01).run(manifest())


def test_stage_hook_runs_the_stage_in_the_trainjob_and_returns_its_artifacts(
    kube, tmp_path, monkeypatch
):
    """pretrain with num_nodes=2 launches a TrainJob; the fake 'controller' runs the job's
    command (the trainjob entry point, in this process) and marks the job Complete."""
    from trainpipe.stages.pretrain import run_pretrain
    from trainpipe.stages.validate import run_validate

    cfg = load_config(
        None,
        [
            f"storage.uri=file://{tmp_path}/artifacts",
            "cluster.num_nodes=2",
            "cluster.s3_secret_name=",
            "pretrain.epochs=1",
            "pretrain.device=cpu",
        ],
    )
    run_id, data_uri = run_validate(cfg.to_json(), "hooked-run")

    def controller(path: str, job: dict) -> None:
        trainer = job["spec"]["trainer"]
        env = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
        assert trainer["command"][:3] == ["torchrun", "--module", "trainpipe.stages.pod"]
        monkeypatch.setenv(CONFIG_ENV, env[CONFIG_ENV])
        assert pod.main(trainer["command"][3:]) == 0
        kube.status_script[path] = [COMPLETE]

    kube.on_create = controller
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    uri = run_pretrain(cfg.to_json(), run_id, data_uri)

    assert uri == f"file://{tmp_path}/artifacts/runs/hooked-run/pretrain"
    assert os.path.exists(f"{tmp_path}/artifacts/runs/hooked-run/pretrain/encoder.pt")
    assert len(kube.server.matching("POST", JOBS)) == 1


def test_pod_entry_point_needs_a_single_node_config(monkeypatch, capsys):
    """The one entry point of training processes refuses, in one line, to run without the
    config or with a config that would launch another TrainJob."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert pod.main(["pretrain", "--run-id", "r", "--input", "data_uri=file:///d"]) == 2
    assert capsys.readouterr().err.strip().endswith("runs under torchrun or inside a TrainJob")
    monkeypatch.setenv(CONFIG_ENV, multi_node_config().to_json())
    assert pod.main(["finetune", "--run-id", "r"]) == 2
    assert "cluster.num_nodes=1" in capsys.readouterr().err
