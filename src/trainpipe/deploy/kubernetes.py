"""Roll the new champion out on a cluster, check it, and roll everything back if it fails.

    deploy.target: kubernetes   patch the serving Deployment's ``--model`` argument
    deploy.target: kserve       patch the InferenceService's spec.predictor.model.storageUri

Steps: read the URI being served now; patch the new version in (with the read resourceVersion
as a precondition, so a concurrent change is refused rather than overwritten); wait for the
rollout (Deployment: observedGeneration, updated/available replicas, progress deadline;
InferenceService: observedGeneration, Ready, latest revision ready); send a smoke inference of
test examples through the Service (OIP v2 REST) and compare it with the exported model's own
answer. If any step fails, the serving object is patched back to the previous URI and the
champion pointer is rolled back to the previous version (when it is still ours), and the
error names what failed and what was rolled back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainpipe.errors import DeployError
from trainpipe.kube import KubeError, api_client, describe

MODEL_FLAG = "--model"


class RolloutFailed(Exception):
    """A step after the patch failed; the caller rolls back."""


# ---- what is being rolled out --------------------------------------------------------------


def _model_arg_index(args: list[str]) -> int | None:
    for i, arg in enumerate(args):
        if arg == MODEL_FLAG and i + 1 < len(args):
            return i + 1
        if arg.startswith(f"{MODEL_FLAG}="):
            return i
    return None


def _with_model(args: list[str], uri: str) -> list[str]:
    args = list(args)
    index = _model_arg_index(args)
    assert index is not None  # current_uri() checked it
    args[index] = f"{MODEL_FLAG}={uri}" if args[index].startswith(f"{MODEL_FLAG}=") else uri
    return args


class DeploymentTarget:
    """The Helm chart's serving Deployment running ``trainpipe serve --model URI``."""

    def __init__(self, api, cfg):
        from kubernetes import client as k8s

        self.apps = k8s.AppsV1Api(api)
        self.cfg = cfg
        self.what = f"Deployment {cfg.namespace}/{cfg.deployment_name}"
        self._args: list[str] = []
        self._resource_version = ""
        self.progress = "not observed yet"

    def _read(self):
        return self.apps.read_namespaced_deployment(self.cfg.deployment_name, self.cfg.namespace)

    def current_uri(self) -> str:
        deployment = self._read()
        containers = {c.name: c for c in deployment.spec.template.spec.containers}
        container = containers.get(self.cfg.container_name)
        if container is None:
            raise RolloutFailed(
                f"{self.what} has no container {self.cfg.container_name!r} "
                f"(containers: {', '.join(containers)}); set deploy.container_name"
            )
        self._args = list(container.args or [])
        index = _model_arg_index(self._args)
        if index is None:
            raise RolloutFailed(
                f"container {self.cfg.container_name!r} of {self.what} has no "
                f"{MODEL_FLAG} argument; it must run `trainpipe serve {MODEL_FLAG} URI`"
            )
        self._resource_version = deployment.metadata.resource_version
        return self._args[index].removeprefix(f"{MODEL_FLAG}=")

    def set_uri(self, uri: str, *, precondition: bool) -> int:
        """Patch the model URI in; returns the Deployment's new generation."""
        body: dict[str, Any] = {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": self.cfg.container_name, "args": _with_model(self._args, uri)}
                        ]
                    }
                }
            }
        }
        if precondition:
            body["metadata"] = {"resourceVersion": self._resource_version}
        patched = self.apps.patch_namespaced_deployment(
            self.cfg.deployment_name, self.cfg.namespace, body
        )
        return patched.metadata.generation

    def rolled_out(self, generation: int) -> bool:
        deployment = self._read()
        status = deployment.status
        if (status.observed_generation or 0) < generation:
            return False
        for condition in status.conditions or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                raise RolloutFailed(
                    f"the rollout of {self.what} exceeded its progress deadline: "
                    f"{condition.message}"
                )
        desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        updated = status.updated_replicas or 0
        self.progress = f"{updated}/{desired} updated, {status.available_replicas or 0} available"
        return (
            updated >= desired
            and (status.replicas or 0) == updated  # old pods are gone
            and (status.available_replicas or 0) >= updated
        )

    def url(self) -> str | None:
        return None

    def smoke_model(self, model_name: str) -> str:
        return model_name


class InferenceServiceTarget:
    """A KServe InferenceService (serving.kserve.io/v1beta1) with a model storageUri."""

    GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

    def __init__(self, api, cfg):
        from kubernetes import client as k8s

        self.custom = k8s.CustomObjectsApi(api)
        self.cfg = cfg
        self.what = f"InferenceService {cfg.namespace}/{cfg.inference_service}"
        self._resource_version = ""
        self._status: dict = {}
        self.progress = "not ready"

    def _read(self) -> dict:
        return self.custom.get_namespaced_custom_object(
            self.GROUP, self.VERSION, self.cfg.namespace, self.PLURAL, self.cfg.inference_service
        )

    def current_uri(self) -> str:
        isvc = self._read()
        uri = isvc.get("spec", {}).get("predictor", {}).get("model", {}).get("storageUri")
        if not uri:
            raise RolloutFailed(
                f"{self.what} has no spec.predictor.model.storageUri; use the "
                "model-format predictor (predictor.model.modelFormat.name: onnx)"
            )
        self._resource_version = isvc["metadata"]["resourceVersion"]
        return uri

    def set_uri(self, uri: str, *, precondition: bool) -> int:
        body: dict[str, Any] = {"spec": {"predictor": {"model": {"storageUri": uri}}}}
        if precondition:
            body["metadata"] = {"resourceVersion": self._resource_version}
        patched = self.custom.patch_namespaced_custom_object(
            self.GROUP,
            self.VERSION,
            self.cfg.namespace,
            self.PLURAL,
            self.cfg.inference_service,
            body,
        )
        return patched["metadata"]["generation"]

    def rolled_out(self, generation: int) -> bool:
        status = self._read().get("status", {})
        self._status = status
        failure = status.get("modelStatus", {}).get("lastFailureInfo")
        if failure and status.get("observedGeneration", 0) >= generation:
            raise RolloutFailed(
                f"{self.what} failed to load the model: {failure.get('reason', '')} "
                f"{failure.get('message', '')}".strip()
            )
        if status.get("observedGeneration", 0) < generation:
            return False
        conditions = {c.get("type"): c for c in status.get("conditions", [])}
        ready = conditions.get("Ready", {})
        predictor = status.get("components", {}).get("predictor", {})
        latest_ready = predictor.get("latestCreatedRevision") == predictor.get(
            "latestReadyRevision"
        )
        self.progress = f"Ready={ready.get('status', 'Unknown')} {ready.get('message', '')}"
        return ready.get("status") == "True" and latest_ready

    def url(self) -> str | None:
        return self._status.get("address", {}).get("url") or self._status.get("url")

    def smoke_model(self, model_name: str) -> str:
        return self.cfg.inference_service  # KServe serves the model under the service's name


# ---- smoke inference -----------------------------------------------------------------------


def smoke_test(url: str, model: str, examples, expected, *, timeout_s: float, tolerance, poll_s):
    """Retry the inference until it answers (endpoints lag the rollout); compare the answer."""
    from trainpipe.export.onnx_export import INPUT_NAME
    from trainpipe.serve.client import InferenceClientError, infer

    deadline = time.monotonic() + timeout_s
    while True:
        sent = time.monotonic()
        try:
            answer = infer(url, model, examples, input_name=INPUT_NAME, timeout_s=10.0)
            break
        except (InferenceClientError, ValueError, KeyError) as exc:
            last = exc
            if time.monotonic() > deadline:
                raise RolloutFailed(
                    f"the smoke inference at {url} got no answer within {timeout_s:g} s "
                    f"(last: {last})"
                ) from None
            time.sleep(poll_s)
    latency_ms = (time.monotonic() - sent) * 1000
    atol, rtol = tolerance
    if answer.shape != expected.shape or not np.allclose(answer, expected, atol=atol, rtol=rtol):
        raise RolloutFailed(
            f"the served model's answer for {len(examples)} test examples differs from the "
            f"exported model's (shape {answer.shape} vs {expected.shape})"
        )
    return answer, latency_ms


# ---- the rollout ---------------------------------------------------------------------------


@dataclass
class RolloutResult:
    target: str
    name: str
    model_uri: str
    previous_uri: str
    rollout_s: float
    smoke_latency_ms: float
    predictions: list[int]


def _rollback_champion(registry, version: str) -> str:
    from trainpipe.registry import RegistryError

    try:
        champion = registry.champion()
        if champion is None or champion.version != version:
            current = champion.version if champion else "none"
            return f"champion left at version {current} (promoted by someone else meanwhile)"
        restored = registry.rollback()
        return f"champion back to version {restored.version}"
    except RegistryError as exc:
        return f"champion NOT rolled back ({exc})"


def rollout(
    cfg,
    *,
    model_uri: str,
    model_name: str,
    version: str,
    examples: np.ndarray,
    expected: np.ndarray,
    registry,
    tolerance: tuple[float, float],
    client=None,
    poll_s: float = 2.0,
) -> RolloutResult:
    """Point the cluster's server at ``model_uri``, wait, smoke-test; roll back on failure.

    ``cfg`` is the DeployConfig; ``registry`` holds the champion pointer that register moved to
    ``version`` and that is moved back if the rollout fails.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client or api_client()
    target = (DeploymentTarget if cfg.target == "kubernetes" else InferenceServiceTarget)(api, cfg)
    started = time.monotonic()
    patched = False
    previous = ""
    try:
        try:
            previous = target.current_uri()
            generation = target.set_uri(model_uri, precondition=True)
            patched = True
        except ApiException as exc:
            hint = "; it changed while deploying, retry" if exc.status == 409 else ""
            raise RolloutFailed(f"cannot update {target.what}: {describe(exc)}{hint}") from None
        except (HTTPError, KubeError) as exc:
            raise RolloutFailed(f"cannot reach the Kubernetes API: {exc}") from None
        print(f"[deploy] {target.what}: {previous} -> {model_uri}", flush=True)
        deadline = time.monotonic() + cfg.rollout_timeout_s
        while not _poll(target, generation):
            if time.monotonic() > deadline:
                raise RolloutFailed(
                    f"the rollout of {target.what} did not finish within "
                    f"{cfg.rollout_timeout_s:g} s ({target.progress})"
                )
            time.sleep(poll_s)
        rollout_s = time.monotonic() - started
        url = cfg.service_url or target.url()
        if not url:
            raise RolloutFailed(f"{target.what} reports no address; set deploy.service_url")
        answer, latency_ms = smoke_test(
            url,
            target.smoke_model(model_name),
            examples,
            expected,
            timeout_s=cfg.smoke_timeout_s,
            tolerance=tolerance,
            poll_s=poll_s,
        )
    except RolloutFailed as failure:
        undone = []
        if patched:
            try:
                target.set_uri(previous, precondition=False)
                undone.append(f"{target.what} back to {previous}")
            except (ApiException, HTTPError) as exc:
                undone.append(f"{target.what} NOT rolled back ({describe(exc)}); fix it by hand")
        undone.append(_rollback_champion(registry, version))
        raise DeployError(f"deploy error: {failure}; rolled back: {'; '.join(undone)}") from None
    return RolloutResult(
        target=cfg.target,
        name=target.what,
        model_uri=model_uri,
        previous_uri=previous,
        rollout_s=round(rollout_s, 3),
        smoke_latency_ms=round(latency_ms, 2),
        predictions=answer.argmax(axis=1).tolist(),
    )


def _poll(target, generation: int) -> bool:
    """One rollout check; API hiccups count as 'not yet' (the timeout still applies)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return target.rolled_out(generation)
    except (ApiException, HTTPError) as exc:
        target.progress = f"last check failed: {describe(exc)}"
        return False
