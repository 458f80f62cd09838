"""An HTTP-level fake of the Kubernetes API server on loopback, for the kubernetes client.

It keeps objects by their REST path and answers like the API server for what trainpipe uses:
create (201, or 409 AlreadyExists), get (404 NotFound), delete, strategic-merge and merge
patches (bumping metadata.generation, honouring a metadata.resourceVersion precondition with
409 Conflict), pod lists by label selector and pod logs (chunked, like ``follow=true``). Errors
are ``Status`` objects. Every request is recorded.

The controllers are scripted by the test: ``status_script[path]`` is a list of ``status``
values that successive GETs of that object return (the last one repeats), and ``on_patch`` may
set a new script when an object is patched, as a Deployment controller would roll out
(``on_create`` likewise when one is created).

    kube = FakeKube()
    configuration = kubernetes.client.Configuration(host=kube.url)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from tests.support.fake_http import Answer, FakeApi, Request


def status_error(code: int, reason: str, message: str) -> Answer:
    return Answer(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def strategic_merge(target: Any, patch: Any) -> Any:
    """Maps merge recursively; lists of named maps (containers, env) merge by name; a None
    value deletes. Close enough to the API server for containers/args/env patches."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(target.get(key), value)
        return merged
    named = (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in [*target, *patch])
    )
    if named:
        merged_list = [copy.deepcopy(x) for x in target]
        for item in patch:
            index = next((i for i, x in enumerate(merged_list) if x["name"] == item["name"]), None)
            if index is None:
                merged_list.append(item)
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what CRDs such as InferenceService accept)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class FakeKube(FakeApi):
    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.status_script: dict[str, list[dict]] = {}
        self.pods: list[dict] = []
        self.logs: dict[str, list[str]] = {}
        self.on_patch: Callable[[str, dict], None] | None = None
        self.on_create: Callable[[str, dict], None] | None = None
        self.missing_prefixes: set[str] = set()
        """Paths under these prefixes answer 404, as for a CRD that is not installed."""
        self.fail_patches: int = 0
        """Answer this many PATCHes with 500 (an API server hiccup)."""
        self._versions = itertools.count(100)
        self._start()

    def put(self, path: str, obj: dict) -> dict:
        """Store an object as if created earlier; returns the stored copy."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        self.objects[path] = stored
        return stored

    def add_pod(
        self, name: str, labels: dict[str, str], *, phase="Running", exit_code=None, reason=None
    ) -> None:
        state: dict[str, Any] = {"running": {}}
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": reason}}
        self.pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "trainpipe", "labels": labels},
                "spec": {"containers": [{"name": "node", "image": "img"}]},
                "status": {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": "node",
                            "image": "img",
                            "imageID": "",
                            "ready": phase == "Running",
                            "restartCount": 0,
                            "state": state,
                        }
                    ],
                },
            }
        )

    def _route(self, request: Request) -> Answer:
        method, path = request.method, request.path.rstrip("/")
        parts = path.split("/")
        if any(path.startswith(prefix) for prefix in self.missing_prefixes):
            return status_error(404, "NotFound", "the server could not find the requested resource")
        if path.startswith("/api/v1/namespaces/") and parts[-1] == "pods" and method == "GET":
            return self._list_pods(request)
        if path.startswith("/api/v1/namespaces/") and parts[-1] == "log" and method == "GET":
            return Answer(200, content_type="text/plain", chunks=self.logs.get(parts[-2], [""]))
        if method == "POST":
            return self._create(path, request.body)
        if method == "GET":
            return self._get(path)
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                return status_error(404, "NotFound", f'"{parts[-1]}" not found')
            return Answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if method == "PATCH":
            return self._patch(path, request)
        return status_error(405, "MethodNotAllowed", f"{method} {path}")

    def _create(self, path: str, body: dict) -> Answer:
        name = body["metadata"]["name"]
        target = f"{path}/{name}"
        if target in self.objects:
            return status_error(
                409, "AlreadyExists", f'{path.split("/")[-1]} "{name}" already exists'
            )
        created = self.put(target, body)
        if self.on_create:
            self.on_create(target, created)
        return Answer(201, created)

    def _get(self, path: str) -> Answer:
        obj = self.objects.get(path)
        if obj is None:
            return status_error(404, "NotFound", f'"{path.split("/")[-1]}" not found')
        script = self.status_script.get(path)
        if script:
            obj["status"] = script.pop(0) if len(script) > 1 else script[0]
        return Answer(200, obj)

    def _patch(self, path: str, request: Request) -> Answer:
        obj = self.objects.get(path)
        if obj is None:
            return status_error(404, "NotFound", f'"{path.split("/")[-1]}" not found')
        if self.fail_patches:
            self.fail_patches -= 1
            return status_error(500, "InternalError", "etcdserver: request timed out")
        expected = (request.body.get("metadata") or {}).get("resourceVersion")
        if expected and expected != obj["metadata"]["resourceVersion"]:
            return status_error(
                409,
                "Conflict",
                "the object has been modified; please apply "
                "your changes to the latest version and try again",
            )
        merge = strategic_merge if "strategic" in request.content_type else merge_patch
        patched = merge(obj, request.body)
        patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[path] = patched
        if self.on_patch:
            self.on_patch(path, patched)
        return Answer(200, patched)

    def _list_pods(self, request: Request) -> Answer:
        selector = request.query.get("labelSelector", "")
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        items = [
            p
            for p in self.pods
            if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return Answer(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
