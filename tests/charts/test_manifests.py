"""The raw manifests under k8s/, validated offline (no cluster): core kinds with
kubernetes-validate --strict; Kubeflow Trainer objects against the trainer.kubeflow.org/v1alpha1
field names, with their embedded pod templates validated strictly as core Kubernetes kinds.

    scripts/install_tools.sh && python -m pytest tests/charts -q
"""

from __future__ import annotations

import re
import subprocess
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.charts import k8s_checks
from tests.charts.conftest import ROOT

K8S = ROOT / "k8s"
MANIFESTS = sorted(p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml"))
TRAINER_KINDS = {"ClusterTrainingRuntime", "TrainJob"}
# The serving Deployment's name from `helm install trainpipe charts/trainpipe -n trainpipe`.
SERVING_DEPLOYMENT = "trainpipe"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _all_docs() -> list[dict[str, Any]]:
    return [d for name in MANIFESTS for d in _docs(name)]


def _find(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [
        d
        for d in _all_docs()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return doc


def _strict(
    kubernetes_validate: ModuleType, versions: list[str], doc: dict[str, Any], label: str
) -> list[str]:
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{label} @ {version}: {str(error).splitlines()[0]}")
    return problems


def test_manifests_exist() -> None:
    assert {
        "namespace.yaml",
        "rbac.yaml",
        "priorityclass.yaml",
        "s3-secret.example.yaml",
        "kfp-launcher-aws-irsa.yaml",
        "kfp-launcher-minio.yaml",
        "trainer/cluster-training-runtime.yaml",
        "trainer/trainjob-example.yaml",
    } <= set(MANIFESTS)


@pytest.mark.parametrize("name", MANIFESTS)
def test_core_objects_validate_strictly(
    kubernetes_validate: ModuleType, k8s_versions: list[str], name: str
) -> None:
    problems = []
    for doc in _docs(name):
        if doc["kind"] in TRAINER_KINDS:
            continue
        problems += _strict(
            kubernetes_validate,
            k8s_versions,
            doc,
            f"{name}: {doc['kind']}/{doc['metadata']['name']}",
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", MANIFESTS)
def test_pods_meet_restricted_and_pin_images(name: str) -> None:
    problems = []
    for doc in _docs(name):
        for where, pod in k8s_checks.pod_specs(doc):
            problems += k8s_checks.restricted_violations(where, pod)
            problems += k8s_checks.image_violations(where, pod)
    assert not problems, "\n".join(problems)


def test_namespace_enforces_restricted() -> None:
    labels = _find("Namespace", "trainpipe")["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_rbac_is_least_privilege() -> None:
    docs = _docs("rbac.yaml")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = _find("Role")
    assert k8s_checks.rbac_wildcard_violations(role) == []
    assert k8s_checks.rules_as_set(role) == k8s_checks.expected_pipeline_rules(SERVING_DEPLOYMENT)
    binding = _find("RoleBinding")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "trainpipe"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    for subject in binding["subjects"]:
        assert (subject["namespace"], subject["name"]) in accounts


# kubeflow/pipelines backend/src/v2/config/s3.go: S3ProviderConfig and what it nests.
LAUNCHER_S3_FIELDS = {
    "s3": {"default", "Overrides"},
    "default": {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle", "maxRetries"},
    "credentials": {"fromEnv", "secretRef"},
    "secretRef": {"secretName", "accessKeyKey", "secretKeyKey"},
}


def _launcher(name: str) -> tuple[str, dict[str, Any]]:
    (config_map,) = _docs(name)
    assert config_map["metadata"]["name"] == "kfp-launcher"
    assert set(config_map["data"]) == {"defaultPipelineRoot", "providers"}
    providers = yaml.safe_load(config_map["data"]["providers"])
    assert set(providers) == {"s3"}
    s3 = providers["s3"]
    assert set(s3) <= LAUNCHER_S3_FIELDS["s3"]
    assert set(s3["default"]) <= LAUNCHER_S3_FIELDS["default"]
    credentials = s3["default"]["credentials"]
    assert set(credentials) <= LAUNCHER_S3_FIELDS["credentials"]
    assert set(credentials.get("secretRef", {})) <= LAUNCHER_S3_FIELDS["secretRef"]
    root = config_map["data"]["defaultPipelineRoot"]
    assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{2,62}(/[^/]+)*", root), root
    return config_map["metadata"]["namespace"], s3["default"]


def test_kfp_launcher_aws_irsa() -> None:
    _, default = _launcher("kfp-launcher-aws-irsa.yaml")
    assert default["credentials"] == {"fromEnv": True}, "IRSA: the SDK's default chain, no keys"
    assert default["endpoint"] == "s3.amazonaws.com" and default["region"]
    runner = _find("ServiceAccount", "trainpipe-runner")
    assert runner["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )


def test_kfp_launcher_minio_uses_the_example_secret() -> None:
    namespace, default = _launcher("kfp-launcher-minio.yaml")
    ref = default["credentials"]["secretRef"]
    assert default["credentials"]["fromEnv"] is False
    assert set(ref) == LAUNCHER_S3_FIELDS["secretRef"]
    (secret,) = [
        s for s in _docs("s3-secret.example.yaml") if s["metadata"]["namespace"] == namespace
    ]
    assert secret["metadata"]["name"] == ref["secretName"]
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["stringData"])
    assert default["disableSSL"] is True and default["forcePathStyle"] is True


def test_example_secret_holds_only_placeholders() -> None:
    for secret in _docs("s3-secret.example.yaml"):
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            value = secret["stringData"][key]
            assert "EXAMPLE" in value and "REPLACE" in value, f"{key}={value!r} looks real"
        assert "data" not in secret, "base64 `data` hides what the values are; use stringData"


def test_priority_class_never_preempts() -> None:
    priority = _find("PriorityClass", "trainpipe-training")
    assert priority["preemptionPolicy"] == "Never" and priority["globalDefault"] is False


# Field names of trainer.kubeflow.org/v1alpha1 present in every Trainer release from v2.1 to v2.3
# (pkg/apis/trainer/v1alpha1/*_types.go); fields that exist in only some of them are refused.
TRAINJOB_SPEC_FIELDS = {"runtimeRef", "initializer", "trainer", "suspend", "managedBy"}
TRAINER_FIELDS = {
    "image",
    "command",
    "args",
    "env",
    "numNodes",
    "resourcesPerNode",
    "numProcPerNode",
}
RUNTIME_REF_FIELDS = {"name", "apiGroup", "kind"}
RUNTIME_SPEC_FIELDS = {"mlPolicy", "podGroupPolicy", "template"}
ML_POLICY_FIELDS = {"numNodes", "torch", "mpi"}
JOBSET_SPEC_FIELDS = {
    "replicatedJobs",
    "network",
    "successPolicy",
    "failurePolicy",
    "startupPolicy",
    "suspend",
    "coordinator",
    "managedBy",
    "ttlSecondsAfterFinished",
}
REPLICATED_JOB_FIELDS = {"name", "replicas", "template"}


def test_cluster_training_runtime(kubernetes_validate: ModuleType, k8s_versions: list[str]) -> None:
    runtime = _find("ClusterTrainingRuntime", "trainpipe-torch-distributed")
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert "namespace" not in runtime["metadata"], "ClusterTrainingRuntime is cluster-scoped"
    spec = runtime["spec"]
    assert set(spec) <= RUNTIME_SPEC_FIELDS
    assert set(spec["mlPolicy"]) <= ML_POLICY_FIELDS
    assert spec["mlPolicy"]["torch"] == {}, "torch options differ between Trainer releases"
    jobset = spec["template"]["spec"]
    assert set(jobset) <= JOBSET_SPEC_FIELDS
    (job,) = jobset["replicatedJobs"]
    assert set(job) <= REPLICATED_JOB_FIELDS
    # The torch plugin injects PET_* into container "node" of job "node", and applies the
    # TrainJob's .spec.trainer to the Job labelled as the trainer step.
    assert job["name"] == "node"
    assert (
        job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"]
        == "trainer"
    )
    pod = job["template"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["node"]
    # The JobSet's Job template is a batch/v1 JobTemplateSpec: validate it as a Job.
    as_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "node", **job["template"]["metadata"]},
        "spec": job["template"]["spec"],
    }
    problems = _strict(kubernetes_validate, k8s_versions, as_job, "replicatedJobs[node]")
    assert not problems, "\n".join(problems)
    # Everything the pod names exists in the manifests.
    assert _find("PriorityClass", pod["priorityClassName"])
    trainer_sa = _find("ServiceAccount", pod["serviceAccountName"])
    assert trainer_sa["metadata"]["namespace"] == "trainpipe"
    assert pod["automountServiceAccountToken"] is False
    shm = {v["name"]: v for v in pod["volumes"]}["dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_trainjob_example(kubernetes_validate: ModuleType, k8s_versions: list[str]) -> None:
    job = _find("TrainJob")
    runtime = _find("ClusterTrainingRuntime")
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert job["metadata"]["namespace"] == "trainpipe"
    spec = job["spec"]
    assert set(spec) <= TRAINJOB_SPEC_FIELDS
    assert set(spec["runtimeRef"]) <= RUNTIME_REF_FIELDS
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": runtime["metadata"]["name"],
    }
    trainer = spec["trainer"]
    assert set(trainer) <= TRAINER_FIELDS
    assert trainer["numNodes"] > 1, "the example exists to prove multi-node training"
    assert isinstance(trainer["numProcPerNode"], int), "v2.3 accepts integers only"
    assert trainer["command"][0] == "torchrun"
    gpus = trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
    assert gpus == trainer["numProcPerNode"], "one process per GPU"
    # resourcesPerNode is a core ResourceRequirements: validate it inside a Pod.
    as_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "node"},
        "spec": {
            "containers": [
                {
                    "name": "node",
                    "image": trainer["image"],
                    "command": trainer["command"],
                    "resources": trainer["resourcesPerNode"],
                }
            ]
        },
    }
    problems = _strict(kubernetes_validate, k8s_versions, as_pod, "trainer")
    assert not problems, "\n".join(problems)
    assert k8s_checks.image_violations("trainer", as_pod["spec"]) == []


def test_readme_covers_every_manifest() -> None:
    readme = (K8S / "README.md").read_text()
    missing = [name for name in MANIFESTS if f"k8s/{name}" not in readme]
    assert not missing, f"k8s/README.md never mentions {missing}"


def test_install_tools_script_parses() -> None:
    script = ROOT / "scripts" / "install_tools.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert script.stat().st_mode & 0o111, "install_tools.sh must be executable"
