"""The Helm chart, checked with the real helm binary and kubernetes-validate (no cluster needed).

scripts/install_tools.sh && python -m pytest tests/charts -q
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.charts import k8s_checks
from tests.charts.conftest import CHART, NAMESPACE, ROOT, SCENARIOS, run_helm

CRD_KINDS = {"ServiceMonitor"}  # not in kubernetes-validate's schemas; checked by hand below


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = _by_kind(docs, kind)
    return doc


def _values(scenario: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / scenario).read_text())


def test_scenarios_exist() -> None:
    assert {"default-values.yaml", "full-values.yaml", "continual-values.yaml"} <= set(SCENARIOS)


def test_chart_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == package


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm: Path, scenario: str) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART), "--values", str(CHART / "ci" / scenario)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_strictly(
    render, kubernetes_validate: ModuleType, k8s_versions: list[str], scenario: str
) -> None:
    """Every rendered object against the 1.30 and the newest schema; unknown fields refused."""
    problems = []
    for doc in render(scenario):
        if doc["kind"] in CRD_KINDS:
            continue
        for version in k8s_versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                first_line = str(error).splitlines()[0]
                problems.append(
                    f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {first_line}"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_meets_restricted_and_pins_images(render, scenario: str) -> None:
    problems = []
    pods = [ps for doc in render(scenario) for ps in k8s_checks.pod_specs(doc)]
    assert pods
    for where, pod in pods:
        problems += k8s_checks.restricted_violations(where, pod)
        problems += k8s_checks.resource_limit_violations(where, pod)
        problems += k8s_checks.image_violations(where, pod)
        # No pod the chart runs needs the Kubernetes API token.
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
    assert not problems, "\n".join(problems)


def test_images_default_to_app_version(render) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    docs = render(
        "default-values.yaml",
        "--set",
        "retraining.enabled=true",
        "--set",
        "retraining.kfpHost=http://kfp:8888",
    )
    images = {
        c["image"]
        for _, pod in (p for d in docs for p in k8s_checks.pod_specs(d))
        for c in k8s_checks.containers(pod)
    }
    assert images == {
        f"ghcr.io/trainpipe/trainpipe-serve:{chart['appVersion']}",
        f"ghcr.io/trainpipe/trainpipe:{chart['appVersion']}",
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_serving_container_contract(render, scenario: str) -> None:
    values = _values(scenario)
    deployment = _one(render(scenario), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"] + server["args"] == [
        "trainpipe",
        "serve",
        "--model",
        values["serving"]["modelUri"],
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["startupProbe"]["httpGet"]["port"] == "http"
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in server["ports"]
    # Read-only root filesystem: /tmp must be a writable emptyDir.
    assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])


def test_s3_credentials_are_referenced_never_embedded(render) -> None:
    for scenario in SCENARIOS:
        assert not _by_kind(render(scenario), "Secret"), f"{scenario} renders a Secret"
    env = _one(render("minio-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["AWS_ENDPOINT_URL"]["value"] == "http://seaweedfs.kubeflow:8333"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert by_name[var]["valueFrom"]["secretKeyRef"] == {"name": "trainpipe-s3", "key": var}


def test_irsa_annotations_reach_the_service_accounts(render) -> None:
    values = _values("full-values.yaml")
    accounts = {
        sa["metadata"]["name"]: sa for sa in _by_kind(render("full-values.yaml"), "ServiceAccount")
    }
    serving, pipeline = accounts["digits-serving"], accounts["digits-pipeline"]
    assert serving["metadata"]["annotations"] == values["serving"]["serviceAccount"]["annotations"]
    assert (
        pipeline["metadata"]["annotations"] == values["pipeline"]["serviceAccount"]["annotations"]
    )
    assert serving["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_least_privilege(render, scenario: str) -> None:
    docs = render(scenario)
    role, binding = _one(docs, "Role"), _one(docs, "RoleBinding")
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")
    assert k8s_checks.rbac_wildcard_violations(role) == []
    deployment = _one(docs, "Deployment")["metadata"]["name"]
    assert k8s_checks.rules_as_set(role) == k8s_checks.expected_pipeline_rules(deployment)
    pipeline_sa = binding["subjects"][0]
    assert pipeline_sa["kind"] == "ServiceAccount" and pipeline_sa["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if _values(s).get("retraining", {}).get("enabled")]
)
def test_retraining_cronjob(render, scenario: str) -> None:
    values = _values(scenario)
    retraining = values["retraining"]
    docs = render(scenario)
    cron = _one(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["suspend"] is retraining.get("suspend", False)
    assert cron["spec"]["schedule"] == retraining.get("schedule", "0 3 * * 0")
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0, "a retried submit would start a second pipeline run"
    pod = job["template"]["spec"]
    (submit,) = pod["containers"]
    assert submit["command"] + submit["args"][:6] == [
        "trainpipe",
        "submit",
        "--host",
        retraining["kfpHost"],
        "--config",
        "/etc/trainpipe/config.yaml",
        "--wait",
    ]
    # retraining.pipeline chooses the DAG each scheduled run submits.
    continual = retraining.get("pipeline", "batch") == "continual"
    assert ("--continual" in submit["args"]) is continual
    assert {"name": "config", "mountPath": "/etc/trainpipe", "readOnly": True} in submit[
        "volumeMounts"
    ]
    config_map = _one(docs, "ConfigMap")
    assert {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}} in pod[
        "volumes"
    ]
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == values.get("pipelineConfig", {})
    env = {e["name"]: e for e in submit.get("env", [])}
    if retraining.get("auth", {}).get("existingSecret"):
        assert (
            env["KFP_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
            == retraining["auth"]["existingSecret"]
        )
    else:
        # The projected token for the KFP audience, where the KFP SDK looks for it.
        token_dir = "/var/run/secrets/kubeflow/pipelines"
        assert env["KF_PIPELINES_SA_TOKEN_PATH"]["value"] == f"{token_dir}/token"
        (volume,) = [v for v in pod["volumes"] if "projected" in v]
        source = volume["projected"]["sources"][0]["serviceAccountToken"]
        assert source["audience"] == "pipelines.kubeflow.org"


def test_full_scenario_renders_every_optional_object(render) -> None:
    kinds = {d["kind"] for d in render("full-values.yaml")}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "NetworkPolicy",
        "CronJob",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Pod",
    } <= kinds
    default_kinds = {d["kind"] for d in render("default-values.yaml")}
    assert (
        not {"HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "CronJob"}
        & default_kinds
    )


def test_autoscaling_owns_the_replica_count(render) -> None:
    docs = render("full-values.yaml")
    hpa, deployment = _one(docs, "HorizontalPodAutoscaler"), _one(docs, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA and the Deployment would fight"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert _one(render("default-values.yaml"), "Deployment")["spec"]["replicas"] == 2


def test_service_monitor_and_network_policy_target_the_server(render) -> None:
    docs = render("full-values.yaml")
    service = _one(docs, "Service")
    selector = _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    policy = _one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    test_pod_labels = _one(docs, "Pod")["metadata"]["labels"]
    peers = policy["spec"]["ingress"][0]["from"]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod_labels.items()
        and "podSelector" in p
        and p["podSelector"].get("matchLabels")
        for p in peers
    ), "the helm test pod must be allowed through the NetworkPolicy"


def test_helm_test_pod_calls_ready_on_the_service(render) -> None:
    docs = render("default-values.yaml")
    pod, service = _one(docs, "Pod"), _one(docs, "Service")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    port = service["spec"]["ports"][0]["port"]
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}/v2/health/ready"
    assert url in script
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("serving.bogus=1", "additional properties 'bogus' not allowed"),
        ("retraining.image.bogus=1", "additional properties 'bogus' not allowed"),
        ("serving.image.tag=latest", "/serving/image/tag"),
        ("containerSecurityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
        ("podSecurityContext.runAsUser=0", "runAsUser"),
        ("retraining.pipeline=nightly", "/retraining/pipeline"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, override: str, message: str) -> None:
    result = run_helm(
        helm,
        "template",
        "t",
        str(CHART),
        "--values",
        str(CHART / "ci" / "default-values.yaml"),
        "--set",
        override,
    )
    assert result.returncode != 0, f"--set {override} was accepted"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "serving.modelUri is required"),
        (
            ("--set", "serving.modelUri=s3://b/registry/m", "--set", "retraining.enabled=true"),
            "retraining.kfpHost is required",
        ),
        (
            (
                *(
                    "--set",
                    "serving.modelUri=s3://b/registry/m",
                    "--set",
                    "retraining.enabled=true",
                ),
                *("--set", "retraining.kfpHost=http://kfp:8888"),
                *("--set", "retraining.pipeline=continual"),
            ),
            "needs pipelineConfig.continual.source",
        ),
    ],
)
def test_required_values_fail_with_the_fix(helm: Path, args: tuple[str, ...], message: str) -> None:
    result = run_helm(helm, "template", "t", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# Maps whose keys are the user's (labels, annotations, node selectors, resource names) or that
# are Kubernetes/pipeline types passed through verbatim and checked by the API server schema.
FREE_FORM = re.compile(
    r"(annotations|labels|commonLabels|podAnnotations|podLabels|nodeSelector|requests|limits"
    r"|affinity|behavior|pipelineConfig|global)$"
)


def _object_schemas(schema: dict[str, Any], path: str = ""):
    if schema.get("type") == "object" or "properties" in schema:
        yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _object_schemas(sub, f"{path}/{key}")
    items = schema.get("items")
    if isinstance(items, dict) and "properties" in items:
        yield from _object_schemas(items, f"{path}[]")


def test_schema_is_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = [
        path
        for path, sub in _object_schemas(schema)
        if sub.get("additionalProperties") is not False and not FREE_FORM.search(path)
    ]
    assert not open_objects, f"objects without additionalProperties: false: {open_objects}"


KEY_LINE = re.compile(r"^(\s*)(?:- )?([A-Za-z0-9_.\-/]+):(\s|$)")


def test_every_value_is_commented() -> None:
    """Each key in values.yaml has a comment line directly above it or a trailing comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        if line.lstrip().startswith("#") or not KEY_LINE.match(line):
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#") and " # " not in line:
            uncommented.append(f"values.yaml:{number + 1}: {line.strip()}")
    assert not uncommented, "\n".join(uncommented)


def test_every_value_is_in_the_schema() -> None:
    """Every key in values.yaml is described by the schema (so it can be documented and typed)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def missing(vals: dict[str, Any], sch: dict[str, Any], path: str) -> list[str]:
        out = []
        props = sch.get("properties", {})
        for key, value in vals.items():
            if key not in props:
                out.append(f"{path}/{key}")
            elif isinstance(value, dict) and "properties" in props[key]:
                out += missing(value, props[key], f"{path}/{key}")
        return out

    assert missing(values, schema, "") == []
