"""An HTTP-level fake of the KFP v2 REST API (``/apis/v2beta1``) on loopback.

It answers healthz, experiments, runs and recurring runs the way the KFP API server does (JSON
field names as in its OpenAPI spec), keeps what was created, and records every request so tests
can check the bodies kfp.Client sent. A run's state follows a script: each GET of the run takes
the next state (the last one repeats).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.support.fake_http import Answer, FakeApi, Request

API = "/apis/v2beta1"


class FakeKfp(FakeApi):
    def __init__(
        self,
        *,
        token: str | None = None,
        run_states: list[str] | None = None,
        run_error: str | None = None,
    ):
        self.token = token
        """When set, every request must carry ``Authorization: Bearer <token>``."""
        self.run_states = list(run_states or ["PENDING", "RUNNING", "SUCCEEDED"])
        self.run_error = run_error
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._polls: dict[str, int] = {}
        self._start()

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def _route(self, request: Request) -> Answer:
        if self.token is not None and request.authorization != f"Bearer {self.token}":
            return Answer(401, {"error": "Unauthenticated", "code": 16, "message": "bad token"})
        method, path = request.method, request.path
        if method == "GET" and path == f"{API}/healthz":
            return Answer(200, {"multi_user": False})
        if path == f"{API}/experiments":
            return self._experiments(request)
        if method == "POST" and path == f"{API}/runs":
            return self._create_run(request.body)
        if method == "GET" and path.startswith(f"{API}/runs/"):
            return self._get_run(path.rsplit("/", 1)[-1])
        if path == f"{API}/recurringruns":
            return self._recurring_runs(request)
        return Answer(404, {"error": f"no route {method} {path}", "code": 5})

    def _experiments(self, request: Request) -> Answer:
        if request.method == "POST":
            experiment = {
                "experiment_id": self._new_id("exp"),
                "display_name": request.body["display_name"],
                "namespace": request.body.get("namespace") or "",
                "storage_state": "AVAILABLE",
            }
            self.experiments[experiment["experiment_id"]] = experiment
            return Answer(200, experiment)
        wanted = _equals_filter(request.query.get("filter"), "display_name")
        found = [e for e in self.experiments.values() if wanted in (None, e["display_name"])]
        return Answer(200, {"experiments": found, "total_size": len(found)} if found else {})

    def _create_run(self, body: dict) -> Answer:
        if body.get("experiment_id") not in self.experiments:
            return Answer(400, {"error": "experiment not found", "code": 3})
        run = {**body, "run_id": self._new_id("run"), "state": "PENDING"}
        self.runs[run["run_id"]] = run
        self._polls[run["run_id"]] = 0
        return Answer(200, run)

    def _get_run(self, run_id: str) -> Answer:
        if run_id not in self.runs:
            return Answer(404, {"error": f"run {run_id} not found", "code": 5})
        index = min(self._polls[run_id], len(self.run_states) - 1)
        self._polls[run_id] += 1
        run = {**self.runs[run_id], "state": self.run_states[index]}
        if run["state"] == "FAILED" and self.run_error:
            run["error"] = {"code": 2, "message": self.run_error}
        return Answer(200, run)

    def _recurring_runs(self, request: Request) -> Answer:
        if request.method == "POST":
            job = {**request.body, "recurring_run_id": self._new_id("rec"), "status": "ENABLED"}
            self.recurring_runs[job["recurring_run_id"]] = job
            return Answer(200, job)
        wanted = _equals_filter(request.query.get("filter"), "display_name")
        experiment = request.query.get("experiment_id")
        found = [
            j
            for j in self.recurring_runs.values()
            if wanted in (None, j["display_name"]) and experiment in (None, j["experiment_id"])
        ]
        # The list key is camelCase in the real API (the proto's json_name), unlike the rest.
        return Answer(200, {"recurringRuns": found, "total_size": len(found)} if found else {})


def _equals_filter(text: str | None, key: str) -> str | None:
    """The string value of an EQUALS predicate on ``key`` in a KFP filter, if any."""
    if not text:
        return None
    for predicate in json.loads(text).get("predicates", []):
        if predicate.get("key") == key and predicate.get("operation") in (1, "EQUALS"):
            return predicate.get("string_value", predicate.get("stringValue"))
    return None
