"""Submit and schedule the pipeline on a Kubeflow Pipelines (v2) cluster.

    trainpipe submit --host http://ml-pipeline.kubeflow:8888 --config my.yaml --wait
    trainpipe schedule --host http://ml-pipeline.kubeflow:8888 --cron "0 3 * * *"

(their command lines are in ``trainpipe.cli_kfp``). Both compile the DAG from the config (as
``trainpipe compile`` does) and talk to the KFP REST API (``/apis/v2beta1``) through
``kfp.Client``. Authentication, first match wins:

1. ``--token`` or the ``KFP_TOKEN`` environment variable: a bearer token;
2. a ServiceAccount token file: ``--token-file``, else ``KF_PIPELINES_SA_TOKEN_PATH`` (the KFP
   SDK's variable; point it at a projected token for audience ``pipelines.kubeflow.org``), else
   ``/var/run/secrets/kubernetes.io/serviceaccount/token``; re-read before every request
   because the kubelet rotates it;
3. none (a port-forwarded or unauthenticated KFP).

Tokens never appear in output or error messages.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainpipe.errors import ConfigError, TrainpipeError

TOKEN_ENV = "KFP_TOKEN"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
API_PREFIX = "/apis/v2beta1"
SUCCEEDED = "SUCCEEDED"
FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


class KfpError(TrainpipeError):
    """The KFP API refused a request or could not be reached."""


class RunFailed(TrainpipeError):
    """The submitted run ended in a state other than SUCCEEDED, or did not end in time."""


# ---- authentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """Where the bearer token comes from; ``describe()`` never shows the token itself."""

    token: str | None = None
    token_file: str | None = None

    def describe(self) -> str:
        if self.token:
            return "a bearer token"
        if self.token_file:
            return f"the ServiceAccount token in {self.token_file}"
        return "no credentials"


def resolve_auth(token: str | None, token_file: str | None) -> Auth:
    """--token, then $KFP_TOKEN, then a token file that exists, else no credentials."""
    token = token or os.environ.get(TOKEN_ENV)
    if token:
        return Auth(token=token.strip())
    path = token_file or os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH
    if Path(path).is_file():
        return Auth(token_file=path)
    if token_file:
        raise ConfigError(f"--token-file {token_file}: no such file; pass the token's path")
    return Auth()


def _bearer(auth: Auth) -> str | None:
    if auth.token:
        return auth.token
    if auth.token_file:
        return Path(auth.token_file).read_text().strip()
    return None


# ---- cron ----------------------------------------------------------------------------------

# KFP's scheduler parses cron with robfig/cron: six fields, seconds first, no 7 for Sunday.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(_WEEKDAYS)}),
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _cron_value(text: str, field: tuple) -> int:
    name, low, high, names = field
    value = names.get(text.upper()) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        hint = " (use 0 for Sunday)" if name == "day of week" and text == "7" else ""
        raise ConfigError(f"cron: {name} {text!r} is not in {low}-{high}{hint}")
    return value


def _check_cron_field(text: str, field: tuple) -> None:
    name = field[0]
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            raise ConfigError(f"cron: {name} step {step!r} must be a positive number")
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                raise ConfigError("cron: '?' is only allowed for day of month or day of week")
            continue
        first, dash, last = base.partition("-")
        start = _cron_value(first, field)
        if dash and _cron_value(last, field) < start:
            raise ConfigError(f"cron: {name} range {base!r} runs backwards")


def to_kfp_cron(expression: str) -> tuple[str, str | None]:
    """Validate a cron expression and return it in KFP's six-field form (and a note if changed).

    Five fields (standard cron) get ``0`` seconds prepended; six are taken as KFP writes them;
    ``@daily``-style descriptors and ``@every 6h`` pass through.
    """
    expression = " ".join(expression.split())
    if expression.startswith("@"):
        word, _, duration = expression.partition(" ")
        if expression in _DESCRIPTORS or (word == "@every" and _GO_DURATION.match(duration)):
            return expression, None
        raise ConfigError(
            f"cron: {expression!r} is not a known descriptor; use one of "
            f"{', '.join(sorted(_DESCRIPTORS))} or '@every 6h'"
        )
    fields = expression.split(" ")
    if len(fields) not in (5, 6):
        raise ConfigError(
            f"cron: {expression!r} has {len(fields)} fields; give 5 (minute hour day month "
            f"weekday) or 6 (with seconds first, as KFP stores it)"
        )
    note = None
    if len(fields) == 5:
        fields = ["0", *fields]
        note = f"cron {expression!r} runs as KFP's six-field {' '.join(fields)!r} (seconds first)"
    for text, field in zip(fields, _CRON_FIELDS, strict=True):
        _check_cron_field(text, field)
    return " ".join(fields), note


# ---- the KFP client ------------------------------------------------------------------------


def _preflight(host: str, auth: Auth, timeout_s: float = 10.0) -> None:
    """One health request, so an unreachable host or a refused token is one clear line
    (kfp.Client itself retries its health check for 25 s and then raises TimeoutError)."""
    request = urllib.request.Request(f"{host}{API_PREFIX}/healthz")
    bearer = _bearer(auth)
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KfpError(
                f"KFP at {host} refused {auth.describe()} ({exc.code}); pass --token or set "
                f"{TOKEN_ENV}, or give a token file for the pipelines.kubeflow.org audience"
            ) from None
        raise KfpError(
            f"KFP at {host} answered {exc.code} on {API_PREFIX}/healthz; is --host the KFP API "
            "(e.g. http://ml-pipeline.kubeflow:8888)?"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KfpError(
            f"cannot reach KFP at {host} ({reason}); check --host (in a cluster "
            "http://ml-pipeline.kubeflow:8888, else `kubectl port-forward`)"
        ) from None


def connect(host: str, auth: Auth, namespace: str | None = None):
    """A ``kfp.Client`` for ``host`` after a health check."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    host = host.rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host {host!r} needs a scheme: http://... or https://...")
    _preflight(host, auth)
    credentials = ServiceAccountTokenVolumeCredentials(auth.token_file) if auth.token_file else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        return kfp.Client(
            host=host,
            existing_token=auth.token,
            credentials=credentials,
            namespace=namespace or "kubeflow",
        )


@contextlib.contextmanager
def _api_errors(host: str, action: str):
    """kfp_server_api errors as one line: status, reason and the server's message."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        # kfp.Client prints links on its own; we print our own lines instead.
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except ApiException as exc:
        message = exc.reason
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(exc.body).get("message") or json.loads(exc.body)["error"]
        raise KfpError(f"KFP at {host} refused to {action}: {exc.status} {message}") from None
    except HTTPError as exc:
        raise KfpError(
            f"lost the connection to KFP at {host} while trying to {action}: {exc}"
        ) from None


def compile_to(cfg, directory: str, *, continual: bool = False) -> str:
    from trainpipe.pipelines.training import compile_pipeline

    path = str(Path(directory) / "pipeline.yaml")
    compile_pipeline(cfg, path, continual=continual)
    return path


def default_run_name(cfg) -> str:
    return f"{cfg.pipeline_name} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"


def submit(
    cfg,
    client,
    host: str,
    *,
    experiment: str,
    run_name: str,
    namespace: str | None,
    continual: bool = False,
):
    """Compile, create (or find) the experiment and create the run; returns the run id."""
    with tempfile.TemporaryDirectory(prefix="trainpipe-submit-") as tmp:
        package = compile_to(cfg, tmp, continual=continual)
        with _api_errors(host, f"create a run in experiment {experiment!r}"):
            result = client.create_run_from_pipeline_package(
                package, run_name=run_name, experiment_name=experiment, namespace=namespace
            )
    return result.run_id


def wait_for_run(client, host: str, run_id: str, *, timeout_s: float, poll_s: float):
    """Poll the run until it reaches a final state; raise RunFailed unless it SUCCEEDED."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    started = time.monotonic()
    state = None
    while True:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run = client.get_run(run_id)
        except ApiException as exc:
            if exc.status < 500:
                raise KfpError(
                    f"KFP at {host} refused to read run {run_id}: {exc.status}"
                ) from None
            run = None  # a restarting API server must not end a wait of hours
        except HTTPError:
            run = None
        elapsed = time.monotonic() - started
        if run is not None and run.state != state:
            state = run.state
            print(f"run {run_id}: {state} after {elapsed:.0f} s", flush=True)
        if state in FINAL_STATES:
            break
        if elapsed >= timeout_s:
            raise RunFailed(
                f"run {run_id} is still {state or 'unknown'} after {timeout_s:g} s (--timeout-s); "
                f"it keeps running on the cluster: {host}/#/runs/details/{run_id}"
            )
        time.sleep(poll_s)
    if state != SUCCEEDED:
        error = getattr(run, "error", None)
        reason = getattr(error, "message", None) or "no error message recorded"
        raise RunFailed(f"run {run_id} {state}: {reason} (details: {host}/#/runs/details/{run_id})")
    return run


def schedule(
    cfg,
    client,
    host: str,
    *,
    cron: str,
    name: str,
    experiment: str,
    namespace: str | None,
    max_concurrency: int,
    catchup: bool,
    continual: bool = False,
):
    """Create a recurring run of the batch (or ``continual``) pipeline; refuses a second one of
    the same name in the experiment."""
    with _api_errors(host, f"find or create experiment {experiment!r}"):
        experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    name_filter = json.dumps(
        {
            "predicates": [
                {
                    # The enum's name: the API parses filters as protobuf JSON.
                    "operation": "EQUALS",
                    "key": "display_name",
                    "stringValue": name,
                }
            ]
        }
    )
    with _api_errors(host, "list recurring runs"):
        existing = client.list_recurring_runs(experiment_id=experiment_id, filter=name_filter)
    for job in existing.recurring_runs or []:
        if job.display_name == name:
            raise KfpError(
                f"a recurring run named {name!r} already exists in experiment {experiment!r} "
                f"(id {job.recurring_run_id}); delete it in the KFP UI or pass another --name"
            )
    with tempfile.TemporaryDirectory(prefix="trainpipe-schedule-") as tmp:
        package = compile_to(cfg, tmp, continual=continual)
        what = "continual retraining" if continual else "retraining"
        with _api_errors(host, f"create recurring run {name!r}"):
            return client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=name,
                description=f"Scheduled {what} of {cfg.pipeline_name} ({cron})",
                cron_expression=cron,
                max_concurrency=max_concurrency,
                no_catchup=not catchup,
                pipeline_package_path=package,
            )
