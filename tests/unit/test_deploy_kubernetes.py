"""Deploy on a cluster (targets kubernetes and kserve) against an HTTP-level fake Kubernetes API
and a real local HTTP smoke endpoint.

No cluster can run here: tests/support/fake_kube.py answers like the API server (Deployment and
InferenceService get/patch) and records each request; its scripted statuses stand in for the
Deployment/KServe controllers. The smoke endpoint is a loopback HTTP server speaking OIP v2 JSON
that runs the registered ONNX model with onnxruntime (or answers wrongly, where a test says so).
"""

from __future__ import annotations

import json

import kubernetes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.support.fake_http import Answer, FakeHttpServer
from tests.support.fake_kube import FakeKube
from trainpipe.config import load_config
from trainpipe.data.stored import load_validated
from trainpipe.errors import ConfigError, DeployError
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session
from trainpipe.kube import api_client
from trainpipe.registry import Registry
from trainpipe.stages.context import make_context
from trainpipe.stages.deploy import run_cluster_deploy
from trainpipe.stages.validate import run_validate
from trainpipe.storage import sha256_bytes

DEPLOYMENT = "/apis/apps/v1/namespaces/trainpipe/deployments/trainpipe"
ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/trainpipe/inferenceservices/digits"
MODEL = "digits-classifier"


def tiny_onnx(feature_shape: list[int], classes: int, seed: int) -> bytes:
    """A linear classifier as ONNX: Flatten -> MatMul, with the exported model's I/O names."""
    features = int(np.prod(feature_shape))
    weights = np.random.default_rng(seed).normal(size=(features, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], [OUTPUT_NAME]),
        ],
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", *feature_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", classes])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.reshape(-1))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def model_json(info: dict, onnx_bytes: bytes) -> dict:
    """The metadata the export stage writes, which the server needs to load a package."""
    classes = len(info["label_names"])
    return {
        "name": MODEL,
        "version": "x",
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *info["feature_shape"]]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes]}],
        "labels": info["label_names"],
        "sha256": sha256_bytes(onnx_bytes),
    }


class World:
    """Artifacts (validated data, two registered versions, version 2 the champion), a fake
    Kubernetes API with the serving object on version 1, and an OIP smoke endpoint."""

    def __init__(self, tmp_path, target: str, *, wrong_answers: bool = False):
        self.kube = FakeKube()
        self.smoke = FakeHttpServer(self._infer)
        self.wrong_answers = wrong_answers
        overrides = [
            f"storage.uri=file://{tmp_path}/artifacts",
            f"deploy.target={target}",
            "deploy.rollout_timeout_s=0.5",
            "deploy.smoke_timeout_s=0.3",
        ]
        if target == "kubernetes":
            overrides.append(f"deploy.service_url={self.smoke.url}")
        else:
            overrides.append("deploy.inference_service=digits")
        self.cfg = load_config(None, overrides)
        run_id, self.data_uri = run_validate(self.cfg.to_json(), "deploy-run")
        self.ctx = make_context(self.cfg.to_json(), run_id)
        info = self.ctx.open(self.data_uri).get_json("dataset.json")
        test = load_validated(self.ctx.open(self.data_uri)).test
        self.registry = Registry(self.ctx.store, MODEL)
        for seed in (1, 2):
            onnx_bytes = tiny_onnx(info["feature_shape"], len(info["label_names"]), seed)
            # What register copies from the evaluate stage: the deploy check compares with it.
            logits = ort_session(onnx_bytes).run([OUTPUT_NAME], {INPUT_NAME: test.x})[0]
            metrics = {"accuracy": float((logits.argmax(1) == test.y).mean())}
            metrics["num_examples"] = len(test.y)
            files = {
                "model.onnx": onnx_bytes,
                "model.json": json.dumps(model_json(info, onnx_bytes)).encode(),
                "parity.json": b"{}",
                "metrics.json": json.dumps(metrics).encode(),
            }
            version = self.registry.register(files, run_id=run_id, lineage={}, summary={})
            self.registry.promote(version, reason="test")
        self.old_uri, self.new_uri = (self.registry.version_uri(v) for v in ("1", "2"))
        self.sessions = {}
        self.infer_paths: list[str] = []

    def _infer(self, request) -> Answer:
        self.infer_paths.append(request.path)
        (tensor,) = request.body["inputs"]
        assert tensor["name"] == INPUT_NAME and tensor["datatype"] == "FP32"
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        session = ort_session(self.ctx.open(self.new_uri).get_bytes("model.onnx"))
        y = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0] + (1.0 if self.wrong_answers else 0.0)
        output = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(y.shape)}
        return Answer(200, {"model_name": "m", "outputs": [{**output, "data": y.ravel().tolist()}]})

    def client(self):
        return api_client(kubernetes.client.Configuration(host=self.kube.url))

    def deploy(self):
        return run_cluster_deploy(
            self.ctx, self.new_uri, self.data_uri, client=self.client(), poll_s=0.01
        )

    def close(self):
        self.kube.close()
        self.smoke.close()


def deployment(model_uri: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "trainpipe", "namespace": "trainpipe"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "trainpipe"}},
            "template": {
                "metadata": {"labels": {"app": "trainpipe"}},
                "spec": {
                    "containers": [
                        {"name": "metrics-sidecar", "image": "sidecar:1", "args": ["--x"]},
                        {
                            "name": "server",
                            "image": "serve:1",
                            "args": ["serve", "--model", model_uri, "--port", "8080"],
                        },
                    ]
                },
            },
        },
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2},
    }  # fmt: skip


def rolling(generation: int) -> list[dict]:
    """What a Deployment controller reports while replacing two pods, then done."""
    return [
        {"observedGeneration": generation - 1, "replicas": 2, "updatedReplicas": 2},
        {"observedGeneration": generation, "replicas": 3, "updatedReplicas": 1,
         "availableReplicas": 2},
        {"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
         "availableReplicas": 2},
    ]  # fmt: skip


def stuck(generation: int) -> list[dict]:
    """A new pod that never becomes ready (e.g. the model does not load)."""
    return [
        {"observedGeneration": generation, "replicas": 3, "updatedReplicas": 1,
         "availableReplicas": 2}
    ]  # fmt: skip


@pytest.fixture
def world_factory(tmp_path):
    worlds = []

    def make(target="kubernetes", **kwargs):
        world = World(tmp_path / str(len(worlds)), target, **kwargs)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


def with_deployment(world: World, controller) -> None:
    world.kube.put(DEPLOYMENT, deployment(world.old_uri))
    first_patch = []

    def on_patch(path, obj):
        # Only the first patch (the new version) gets the scripted rollout; a rollback patch
        # completes at once.
        generation = obj["metadata"]["generation"]
        script = controller(generation) if not first_patch else rolling(generation)[-1:]
        first_patch.append(path)
        world.kube.status_script[path] = script

    world.kube.on_patch = on_patch


def server_args(world: World) -> list[str]:
    containers = world.kube.objects[DEPLOYMENT]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "server")["args"]


def test_rollout_success_patches_waits_and_smoke_tests(world_factory):
    world = world_factory()
    with_deployment(world, rolling)

    uri = world.deploy()

    (patch,) = world.kube.server.matching("PATCH", DEPLOYMENT)
    assert patch.content_type == "application/strategic-merge-patch+json"
    (container,) = patch.body["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "server",
        "args": ["serve", "--model", world.new_uri, "--port", "8080"],
    }
    assert patch.body["metadata"]["resourceVersion"]  # a concurrent change is refused, not lost
    assert server_args(world)[2] == world.new_uri
    assert len(world.kube.server.matching("GET", DEPLOYMENT)) >= 4  # read + rollout polls
    assert world.infer_paths == [f"/v2/models/{MODEL}/infer"]
    assert world.registry.champion().version == "2"
    record = world.ctx.open(uri).get_json("deploy.json")
    assert record["previous_uri"] == world.old_uri and record["model_uri"] == world.new_uri
    assert len(record["predictions"]) == 8


def test_rollout_timeout_rolls_back_deployment_and_champion(world_factory):
    world = world_factory()
    with_deployment(world, stuck)

    with pytest.raises(DeployError) as raised:
        world.deploy()

    message = str(raised.value)
    assert "did not finish within 0.5 s (1/2 updated, 2 available)" in message
    assert f"Deployment trainpipe/trainpipe back to {world.old_uri}" in message
    assert "champion back to version 1" in message
    patches = world.kube.server.matching("PATCH", DEPLOYMENT)
    assert len(patches) == 2
    assert "metadata" not in patches[1].body  # the rollback is unconditional
    assert server_args(world)[2] == world.old_uri
    assert world.registry.champion().version == "1"
    assert not world.infer_paths


def test_smoke_mismatch_rolls_back_deployment_and_champion(world_factory):
    world = world_factory(wrong_answers=True)
    with_deployment(world, rolling)

    with pytest.raises(DeployError, match="differs from the exported model's") as raised:
        world.deploy()

    assert "champion back to version 1" in str(raised.value)
    assert server_args(world)[2] == world.old_uri
    assert world.registry.champion().version == "1"


def test_progress_deadline_fails_fast(world_factory):
    world = world_factory()
    deadline = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "trainpipe-7d9" has timed out progressing.',
    }
    with_deployment(world, lambda g: [{**stuck(g)[0], "conditions": [deadline]}])

    with pytest.raises(DeployError, match="exceeded its progress deadline: ReplicaSet"):
        world.deploy()
    assert world.registry.champion().version == "1"


def test_a_deployment_without_model_argument_rolls_back_the_champion_only(world_factory):
    world = world_factory()
    broken = deployment(world.old_uri)
    broken["spec"]["template"]["spec"]["containers"][1]["args"] = ["serve"]
    world.kube.put(DEPLOYMENT, broken)

    with pytest.raises(DeployError, match="has no --model argument") as raised:
        world.deploy()

    assert "champion back to version 1" in str(raised.value)
    assert not world.kube.server.matching("PATCH", DEPLOYMENT)


def test_kserve_patches_storage_uri_and_smoke_tests_under_the_service_name(world_factory):
    world = world_factory("kserve")
    world.kube.put(
        ISVC,
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "digits", "namespace": "trainpipe"},
            "spec": {
                "predictor": {
                    "model": {"modelFormat": {"name": "onnx"}, "storageUri": world.old_uri}
                }
            },
        },
    )

    def kserve_controller(path, obj):
        generation = obj["metadata"]["generation"]
        ready = {"type": "Ready", "status": "True"}
        world.kube.status_script[path] = [
            {"observedGeneration": generation - 1, "conditions": [ready]},
            {
                "observedGeneration": generation,
                "conditions": [ready],
                "components": {"predictor": {"latestCreatedRevision": "digits-00002",
                                             "latestReadyRevision": "digits-00001"}},
            },
            {
                "observedGeneration": generation,
                "conditions": [ready],
                "address": {"url": world.smoke.url},
                "components": {"predictor": {"latestCreatedRevision": "digits-00002",
                                             "latestReadyRevision": "digits-00002"}},
            },
        ]  # fmt: skip

    world.kube.on_patch = kserve_controller

    world.deploy()

    (patch,) = world.kube.server.matching("PATCH", ISVC)
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["spec"] == {"predictor": {"model": {"storageUri": world.new_uri}}}
    assert world.kube.objects[ISVC]["spec"]["predictor"]["model"]["modelFormat"] == {"name": "onnx"}
    assert world.infer_paths == ["/v2/models/digits/infer"]
    assert world.registry.champion().version == "2"


def test_the_deploy_stage_takes_the_cluster_path(world_factory, tmp_path, monkeypatch):
    """run_deploy with target kubernetes reaches the API through $KUBECONFIG."""
    from trainpipe.stages.deploy import run_deploy

    world = world_factory()
    world.kube.put(DEPLOYMENT, deployment(world.old_uri))
    world.kube.on_patch = lambda path, obj: world.kube.status_script.__setitem__(
        path, rolling(obj["metadata"]["generation"])[-1:]
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "f", "cluster": {"server": world.kube.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "f", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    uri = run_deploy(world.cfg.to_json(), "deploy-run", world.new_uri, world.data_uri)

    assert uri.endswith("/runs/deploy-run/deploy")
    assert server_args(world)[2] == world.new_uri


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["deploy.target=kubernetes"], "needs deploy.service_url"),
        (["deploy.target=kserve"], "needs deploy.inference_service"),
        (["deploy.target=kubernetes", "deploy.service_url=svc:80"], "must start with http"),
        (["deploy.target=gke"], "deploy.target='gke'"),
    ],
)
def test_cluster_targets_need_their_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_tiny_model_is_valid_onnx():
    onnx.checker.check_model(onnx.load_from_string(tiny_onnx([64], 10, 0)))
