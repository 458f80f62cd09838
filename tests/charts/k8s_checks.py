"""Pure checks on Kubernetes objects (dicts), shared by the chart and the raw-manifest tests.

Each check returns a list of human-readable problems; an empty list means the object passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Volume types the Pod Security Standard "restricted" allows
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted).
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)

POD_TEMPLATE_KINDS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}


def _dig(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, pod spec) for every pod an object describes, including Trainer runtimes."""
    kind = doc.get("kind")
    name = f"{kind}/{doc.get('metadata', {}).get('name')}"
    if kind in POD_TEMPLATE_KINDS:
        yield name, _dig(doc, POD_TEMPLATE_KINDS[kind])
    elif kind in ("ClusterTrainingRuntime", "TrainingRuntime"):
        for job in doc["spec"]["template"]["spec"]["replicatedJobs"]:
            yield f"{name}[{job['name']}]", job["template"]["spec"]["template"]["spec"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def restricted_violations(where: str, pod: dict[str, Any]) -> list[str]:
    """Pod Security Standard "restricted" (v1.30+), plus this project's read-only root FS rule."""
    problems = []
    pod_ctx = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']} uses {sorted(kinds)}")
    if pod_ctx.get("runAsUser") == 0:
        problems.append(f"{where}: pod runAsUser is 0")
    for c in containers(pod):
        cname = f"{where} container {c['name']}"
        ctx = c.get("securityContext", {})
        if ctx.get("privileged"):
            problems.append(f"{cname}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation is not false")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{cname}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{cname}: adds capabilities {caps['add']}")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            problems.append(f"{cname}: runAsNonRoot is not true")
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if not isinstance(uid, int) or uid == 0:
            problems.append(f"{cname}: runAsUser must be a non-zero uid (got {uid!r})")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{cname}: seccompProfile is {seccomp!r}")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem is not true")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{cname}: uses a hostPort")
    return problems


def resource_limit_violations(where: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    for c in containers(pod):
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(section, {}))
            if missing:
                problems.append(
                    f"{where} container {c['name']}: no {section} for {sorted(missing)}"
                )
    return problems


def image_violations(where: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    for c in containers(pod):
        image = c.get("image", "")
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        if not name or "/" in tag:
            problems.append(f"{where} container {c['name']}: image {image!r} has no tag")
        elif tag == "latest":
            problems.append(f"{where} container {c['name']}: image {image!r} uses :latest")
    return problems


def rbac_wildcard_violations(doc: dict[str, Any]) -> list[str]:
    problems = []
    if doc.get("kind") not in ("Role", "ClusterRole"):
        return problems
    for i, rule in enumerate(doc.get("rules", [])):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in value for value in rule.get(field, [])):
                problems.append(f"{doc['kind']}/{doc['metadata']['name']} rule {i}: {field} has *")
    return problems


def rules_as_set(doc: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Flatten a Role into (apiGroup, resource, resourceName or '', verb) tuples."""
    flat = set()
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames", [""]):
                    for verb in rule["verbs"]:
                        flat.add((group, resource, name, verb))
    return flat


def expected_pipeline_rules(deployment: str) -> set[tuple[str, str, str, str]]:
    """The pipeline's least-privilege contract: nothing more, nothing less."""
    rules = {("apps", "deployments", deployment, verb) for verb in ("get", "patch")}
    rules |= {
        ("", res, "", verb) for res in ("pods", "pods/log") for verb in ("get", "list", "watch")
    }
    rules |= {
        ("trainer.kubeflow.org", "trainjobs", "", verb)
        for verb in ("create", "get", "list", "watch", "delete")
    }
    return rules
