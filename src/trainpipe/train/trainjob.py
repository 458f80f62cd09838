"""Multi-node training: run a stage as a Kubeflow Trainer TrainJob and wait for it.

When ``cluster.num_nodes > 1`` the pretrain/finetune component pod does not train. It creates

    apiVersion: trainer.kubeflow.org/v1alpha1
    kind: TrainJob                     name: <stage>-<run id>  (deterministic)
    spec.runtimeRef                    ClusterTrainingRuntime cluster.training_runtime
    spec.trainer                       image, numNodes, GPUs per node, env, and the command
        torchrun --module trainpipe.stages.pod <stage> --run-id ID --input data_uri=...

whose nodes run the same stage with ``num_nodes`` set to 1 (so they train instead of launching
again), follows the job's conditions (Complete / Failed), streams its pods' logs into the
step's log, and returns the artifact URI the job committed. A retried component finds the job
by its name and re-attaches (a create answers 409); only a job that already Failed is deleted
and created again. Inside the job, the stage's own code writes and commits the artifacts.

The job's pods run the training processes' one entry point (``trainpipe.stages.pod``, whose
command line the caller passes in as ``entry``); it reads the config from $TRAINPIPE_CONFIG_JSON.
Every process of every node trains (DDP across the whole TrainJob, rendezvous through the PET_*
variables the Trainer injects) and global rank 0 commits the stage's artifacts.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
from typing import Any

from trainpipe.errors import TrainingError
from trainpipe.kube import KubeError, api_client, describe

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
TRAINER_JOB = "node"
"""Name of the replicated job (and of its container) that Trainer's torch runtimes train in."""
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
"""Label JobSet puts on every pod of a TrainJob (its JobSet has the TrainJob's name)."""
CONFIG_ENV = "TRAINPIPE_CONFIG_JSON"
RUN_ID_ANNOTATION = "trainpipe.dev/run-id"
STAGE_LABEL = "trainpipe.dev/stage"
# JobSet names pods <jobset>-<job>-<index>-<pod index>-<suffix>; those must stay DNS labels.
MAX_NAME_CHARS = 40


def trainjob_name(run_id: str, stage: str) -> str:
    """``<stage>-<run id>`` as an RFC 1035 label of at most 40 characters; a hash of the full
    run id replaces the tail when it is longer, so the name stays unique and deterministic."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{stage}-{run_id}".lower()).strip("-")
    if len(slug) <= MAX_NAME_CHARS:
        return slug
    digest = hashlib.sha256(f"{stage}/{run_id}".encode()).hexdigest()[:8]
    return f"{slug[: MAX_NAME_CHARS - 9].rstrip('-')}-{digest}"


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return value.strip("-_.")


def build_trainjob(cfg, *, stage: str, run_id: str, entry: list[str]) -> dict[str, Any]:
    """The TrainJob manifest that runs ``stage`` of ``run_id`` on ``cfg.cluster.num_nodes``;
    each node runs ``torchrun *entry`` (e.g. ``--module trainpipe.stages.pod pretrain ...``)."""
    cluster = cfg.cluster
    single_node = cfg.model_copy(
        update={"cluster": cluster.model_copy(update={"num_nodes": 1})}
    ).to_json()
    command = ["torchrun", *entry]
    env: list[dict[str, Any]] = [
        {"name": CONFIG_ENV, "value": single_node},
        {"name": "PYTHONUNBUFFERED", "value": "1"},  # log lines reach the step as they happen
    ]
    if cfg.storage.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.storage.endpoint_url})
    if cluster.s3_secret_name:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": cluster.s3_secret_name, "key": key}},
            }
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    trainer: dict[str, Any] = {
        "image": cluster.image,
        "command": command,
        "env": env,
        "numNodes": cluster.num_nodes,
        "numProcPerNode": max(cluster.gpus_per_node, 1),
    }
    if cluster.gpus_per_node > 0:
        gpus = {cluster.accelerator_type: cluster.gpus_per_node}
        trainer["resourcesPerNode"] = {"requests": dict(gpus), "limits": dict(gpus)}
    spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": GROUP,
            "kind": "ClusterTrainingRuntime",
            "name": cluster.training_runtime,
        },
        "trainer": trainer,
    }
    scheduling: dict[str, Any] = {}
    if cluster.node_selector:
        scheduling["nodeSelector"] = dict(cluster.node_selector)
    if cluster.tolerations:
        scheduling["tolerations"] = [t.to_k8s() for t in cluster.tolerations]
    if scheduling:
        # Trainer v2.1+; the priority class has no per-job field: it lives in the runtime.
        spec["podTemplateOverrides"] = [{"targetJobs": [{"name": TRAINER_JOB}], "spec": scheduling}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": trainjob_name(run_id, stage),
            "namespace": cluster.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "trainpipe",
                "app.kubernetes.io/component": "training",
                STAGE_LABEL: stage,
                RUN_ID_ANNOTATION: _label_value(run_id),
            },
            "annotations": {RUN_ID_ANNOTATION: run_id},
        },
        "spec": spec,
    }


def _condition(job: dict, kind: str) -> dict | None:
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


class LogStreamer:
    """Follows the trainer container's log of every pod of a job, each in its own thread,
    printing lines prefixed with the pod name (like ``kubectl logs --prefix``)."""

    def __init__(self, core, namespace: str, out=None):
        self.core = core
        self.namespace = namespace
        self.out = out or sys.stdout
        self._started: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def poll(self, selector: str) -> list[dict]:
        """Start following pods that have started; returns the pods (as dicts) it saw."""
        from kubernetes.client.exceptions import ApiException

        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        except ApiException:
            return []
        seen = []
        for pod in pods.items:
            name, phase = pod.metadata.name, pod.status.phase
            seen.append(pod)
            if name in self._started or phase not in ("Running", "Succeeded", "Failed"):
                continue
            thread = threading.Thread(target=self._follow, args=(name,), daemon=True)
            self._started[name] = thread
            thread.start()
        return seen

    def _follow(self, pod: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=TRAINER_JOB, follow=True, _preload_content=False
            )
            pending = ""
            for chunk in response.stream(decode_content=True):
                pending += chunk.decode(errors="replace")
                *lines, pending = pending.split("\n")
                self._print(pod, lines)
            if pending:
                self._print(pod, [pending])
        except (ApiException, OSError) as exc:
            self._print(pod, [f"(log stream ended: {describe(exc)})"])
            with self._lock:
                self._started.pop(pod, None)  # try again on the next poll

    def _print(self, pod: str, lines: list[str]) -> None:
        with self._lock:
            for line in lines:
                print(f"[{pod}] {line}", file=self.out, flush=True)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in list(self._started.values()):
            thread.join(max(0.0, deadline - time.monotonic()))


def _failed_container(pods) -> str:
    """``pod x: OOMKilled, exit code 137`` for the first trainer container that failed."""
    for pod in pods:
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated and terminated.exit_code:
                detail = f"{terminated.reason or 'Error'}, exit code {terminated.exit_code}"
                if terminated.message:
                    detail += f": {terminated.message.strip()}"
                return f"pod {pod.metadata.name}: {detail}"
    return ""


class TrainJobRunner:
    """Create (or re-attach to) a TrainJob, follow it to the end, stream its logs."""

    def __init__(
        self,
        client=None,
        *,
        poll_s: float = 10.0,
        delete_timeout_s: float = 300.0,
        api_outage_s: float = 600.0,
    ):
        from kubernetes import client as k8s

        self.api = client or api_client()
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.poll_s = poll_s
        self.delete_timeout_s = delete_timeout_s
        self.api_outage_s = api_outage_s

    def _get(self, namespace: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read TrainJob {namespace}/{name}: {describe(exc)}") from None
        except HTTPError as exc:
            raise KubeError(f"cannot reach the Kubernetes API: {exc}") from None

    def _watch(self, namespace: str, name: str) -> dict | None:
        """``_get`` that rides out API server outages shorter than ``api_outage_s``: a watch
        of a days-long training must not fail on a control-plane upgrade."""
        first_failure = None
        while True:
            try:
                return self._get(namespace, name)
            except KubeError as exc:
                first_failure = first_failure or time.monotonic()
                if time.monotonic() - first_failure > self.api_outage_s:
                    raise
                print(f"[trainjob] {exc}; retrying", flush=True)
                time.sleep(self.poll_s)

    def _create(self, manifest: dict) -> dict:
        """Create the job; when it exists already (a retried step), return the existing one."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest
            )
        except HTTPError as exc:
            raise KubeError(f"cannot reach the Kubernetes API: {exc}") from None
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(
                    f"cannot create TrainJob {namespace}/{name}: {describe(exc)}; check that "
                    f"Kubeflow Trainer is installed and the step's ServiceAccount may create "
                    f"trainjobs in {namespace}"
                ) from None
        existing = self._get(namespace, name)
        if existing is None:  # deleted between our create and get: create once more
            return self._create(manifest)
        wanted = manifest["metadata"]["annotations"][RUN_ID_ANNOTATION]
        found = existing["metadata"].get("annotations", {}).get(RUN_ID_ANNOTATION)
        if found != wanted:
            raise KubeError(
                f"TrainJob {namespace}/{name} exists but belongs to run {found!r}, not "
                f"{wanted!r}; delete it (kubectl -n {namespace} delete trainjob {name})"
            )
        print(f"[trainjob] re-attaching to {namespace}/{name} (created by an earlier attempt)")
        return existing

    def _delete_and_wait(self, namespace: str, name: str) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body=k8s.V1DeleteOptions(propagation_policy="Foreground"),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(
                    f"cannot delete TrainJob {namespace}/{name}: {describe(exc)}"
                ) from None
        deadline = time.monotonic() + self.delete_timeout_s
        while self._get(namespace, name) is not None:
            if time.monotonic() > deadline:
                raise KubeError(
                    f"TrainJob {namespace}/{name} was not deleted within "
                    f"{self.delete_timeout_s:g} s; delete it by hand and retry"
                )
            time.sleep(self.poll_s)

    def run(self, manifest: dict) -> dict:
        """Run the job to completion; raise TrainingError with the job's message if it fails."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        job = self._create(manifest)
        if _condition(job, "Failed"):
            print(f"[trainjob] {namespace}/{name} failed in an earlier attempt; starting it again")
            self._delete_and_wait(namespace, name)
            job = self._create(manifest)
        nodes = manifest["spec"]["trainer"]["numNodes"]
        print(
            f"[trainjob] {namespace}/{name}: {nodes} nodes, runtime "
            f"{manifest['spec']['runtimeRef']['name']}",
            flush=True,
        )
        logs = LogStreamer(self.core, namespace)
        selector = f"{JOBSET_LABEL}={name}"
        suspended_reported = False
        while True:
            pods = logs.poll(selector)
            job = self._watch(namespace, name)
            if job is None:
                raise TrainingError(f"TrainJob {namespace}/{name} was deleted while running")
            if _condition(job, "Complete"):
                logs.join(timeout_s=10.0)
                print(f"[trainjob] {namespace}/{name} completed", flush=True)
                return job
            failed = _condition(job, "Failed")
            if failed:
                logs.join(timeout_s=10.0)
                pods = logs.poll(selector) or pods
                detail = _failed_container(pods)
                raise TrainingError(
                    f"TrainJob {namespace}/{name} failed: {failed.get('reason', 'Failed')}: "
                    f"{failed.get('message', 'no message')}"
                    + (f" ({detail})" if detail else "")
                    + f"; see `kubectl -n {namespace} describe trainjob {name}`"
                )
            if _condition(job, "Suspended") and not suspended_reported:
                print(f"[trainjob] {namespace}/{name} is suspended (queued); waiting", flush=True)
                suspended_reported = True
            time.sleep(self.poll_s)
