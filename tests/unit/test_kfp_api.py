"""`trainpipe submit` and `trainpipe schedule` against an HTTP-level fake of the KFP v2 REST API.

No KFP backend can run here: tests/support/fake_kfp.py answers on loopback like the KFP API
server and records each request; the real kfp.Client talks HTTP to it.
"""

from __future__ import annotations

import pytest

from tests.support.fake_kfp import FakeKfp
from trainpipe.cli import main
from trainpipe.errors import ConfigError
from trainpipe.kfp_api import TOKEN_ENV, TOKEN_PATH_ENV, resolve_auth, to_kfp_cron

TOKEN = "sekrit-token-123"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    # Where no token file exists, so tests behave the same inside a pod.
    monkeypatch.setenv(TOKEN_PATH_ENV, str(tmp_path / "no-token"))


@pytest.fixture
def kfp():
    fake = FakeKfp(token=TOKEN)
    yield fake
    fake.close()


S3_STORE = ["--set", "storage.uri=s3://bucket/ml"]
"""A store that pods can read: the default local one draws a warning line on stderr."""


def submit(kfp: FakeKfp, *extra: str) -> int:
    return main(["submit", "--host", kfp.url, "--token", TOKEN, "--poll-s", "0.01", *extra])


def test_submit_waits_for_success_and_sends_the_compiled_pipeline(kfp, capsys):
    status = submit(kfp, "--wait", "--experiment", "nightly", "--run-name", "r1")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "SUCCEEDED" in out.splitlines()[-1]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in kfp.requests)
    assert TOKEN not in out + err

    (created_experiment,) = kfp.server.matching("POST", "/apis/v2beta1/experiments")
    assert created_experiment.body["display_name"] == "nightly"
    (created_run,) = kfp.server.matching("POST", "/apis/v2beta1/runs")
    body = created_run.body
    assert body["display_name"] == "r1"
    assert body["experiment_id"] in kfp.experiments
    spec = body["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "trainpipe"
    assert "kubernetes" in spec["platform_spec"]["platforms"]
    defaults = spec["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert '"pipeline_name":"trainpipe"' in defaults["config_json"]["defaultValue"]
    assert len(kfp.server.matching("GET", "/apis/v2beta1/runs/")) == 3  # PENDING, RUNNING, done


def test_submit_reuses_an_existing_experiment_and_applies_overrides(kfp, capsys):
    assert submit(kfp, "--set", "pipeline_name=retrain") == 0
    assert submit(kfp, "--set", "pipeline_name=retrain") == 0
    assert len(kfp.experiments) == 1
    assert next(iter(kfp.experiments.values()))["display_name"] == "retrain"
    assert len(kfp.runs) == 2
    assert "submitted run run-" in capsys.readouterr().out


def test_failed_run_is_one_line_with_the_error_and_exit_1(capsys):
    kfp = FakeKfp(run_states=["RUNNING", "FAILED"], run_error="pretrain: OOMKilled")
    try:
        status = main(["submit", "--host", kfp.url, "--wait", "--poll-s", "0.01", *S3_STORE])
    finally:
        kfp.close()
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert len(err.splitlines()) == 1
    assert "FAILED: pretrain: OOMKilled" in err


def test_wait_times_out_with_exit_1(capsys):
    kfp = FakeKfp(run_states=["RUNNING"])
    try:
        status = main(
            ["submit", "--host", kfp.url, "--wait", "--timeout-s", "0.2", "--poll-s", "0.02"]
        )
    finally:
        kfp.close()
    err = capsys.readouterr().err
    assert status == 1
    assert "still RUNNING after 0.2 s" in err and "keeps running on the cluster" in err


def test_wrong_token_is_refused_without_showing_it(kfp, capsys):
    status = main(["submit", "--host", kfp.url, "--token", "wrong-token-456"])
    err = capsys.readouterr().err
    assert status == 1
    assert "refused a bearer token (401)" in err and "wrong-token-456" not in err
    assert not kfp.server.matching("POST", "/apis/v2beta1/runs")


def test_unreachable_host_is_one_line(capsys):
    status = main(["submit", "--host", "http://127.0.0.1:9", *S3_STORE])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("trainpipe: cannot reach KFP at http://127.0.0.1:9")


def test_service_account_token_file_is_used_and_reread(kfp, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    status = main(["submit", "--host", kfp.url, "--token-file", str(token_file)])
    assert status == 0, capsys.readouterr().err
    assert kfp.requests and all(r.authorization == f"Bearer {TOKEN}" for r in kfp.requests)
    assert "ServiceAccount token" in capsys.readouterr().out

    token_file.write_text("rotated-by-kubelet")
    kfp.token = "rotated-by-kubelet"
    assert main(["submit", "--host", kfp.url, "--token-file", str(token_file)]) == 0


def test_auth_precedence(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    monkeypatch.setenv(TOKEN_PATH_ENV, str(token_file))
    assert resolve_auth(None, None).token_file == str(token_file)
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert resolve_auth(None, None).token == "from-env"
    assert resolve_auth("from-flag", None).token == "from-flag"
    assert "from-flag" not in resolve_auth("from-flag", None).describe()
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_PATH_ENV, str(tmp_path / "absent"))
    assert resolve_auth(None, None).token is None and resolve_auth(None, None).token_file is None
    with pytest.raises(ConfigError, match="no such file"):
        resolve_auth(None, str(tmp_path / "absent"))


def test_schedule_creates_one_recurring_run_with_kfp_cron(kfp, capsys):
    argv = ["schedule", "--host", kfp.url, "--token", TOKEN, "--cron", "30 3 * * MON-FRI"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "'0 30 3 * * MON-FRI'" in out and "seconds first" in out
    (created,) = kfp.server.matching("POST", "/apis/v2beta1/recurringruns")
    job = created.body
    assert job["display_name"] == "trainpipe retraining"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * MON-FRI"
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["experiment_id"] in kfp.experiments
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "trainpipe"

    assert main(argv) == 1  # the same name twice would run the pipeline twice
    assert "already exists" in capsys.readouterr().err
    assert len(kfp.recurring_runs) == 1


def test_schedule_continual_creates_a_recurring_run_of_the_continual_dag(kfp, capsys):
    argv = ["schedule", "--host", kfp.url, "--token", TOKEN, "--cron", "0 * * * *"]
    source = "continual.source=s3://bucket/incoming"
    assert main([*argv, "--continual", "--set", source]) == 0, capsys.readouterr().err
    (created,) = kfp.server.matching("POST", "/apis/v2beta1/recurringruns")
    job = created.body
    assert job["display_name"] == "trainpipe continual retraining"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 * * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    spec = job["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "trainpipe-continual"
    assert "continual-release" in spec["root"]["dag"]["tasks"]  # the exit handler
    defaults = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"source":"s3://bucket/incoming"' in defaults
    # The batch pipeline may be scheduled beside it: the default names differ.
    assert main(argv) == 0
    assert {j["display_name"] for j in kfp.recurring_runs.values()} == {
        "trainpipe continual retraining",
        "trainpipe retraining",
    }


def test_schedule_catchup_and_concurrency_are_passed(kfp):
    argv = ["schedule", "--host", kfp.url, "--token", TOKEN, "--cron", "0 0 */6 * * *"]
    assert main([*argv, "--name", "six-hourly", "--catchup", "true", "--max-concurrency", "2"]) == 0
    job = next(iter(kfp.recurring_runs.values()))
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 */6 * * *"
    assert job["no_catchup"] is False and int(job["max_concurrency"]) == 2


def test_bad_cron_fails_before_any_request(kfp, capsys):
    status = main(["schedule", "--host", kfp.url, "--cron", "0 25 * * *"])
    assert status == 2
    assert "cron: hour '25' is not in 0-23" in capsys.readouterr().err
    assert not kfp.requests


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("*/15 * * * 1-5", "0 */15 * * * 1-5"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
        ("0 0 0 1 JAN,JUL *", "0 0 0 1 JAN,JUL *"),
        ("@daily", "@daily"),
        ("@every 6h", "@every 6h"),
    ],
)
def test_cron_conversion(expression, expected):
    assert to_kfp_cron(expression)[0] == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "has 4 fields"),
        ("0 3 * * 7", "use 0 for Sunday"),
        ("0 3 * * FOO", "day of week 'FOO'"),
        ("0 3 31-1 * *", "runs backwards"),
        ("*/0 * * * *", "step '0'"),
        ("? * * * *", "'?' is only allowed"),
        ("@sometimes", "not a known descriptor"),
    ],
)
def test_bad_cron_is_explained(expression, message):
    with pytest.raises(ConfigError, match=message):
        to_kfp_cron(expression)


def test_submit_and_schedule_warn_about_local_paths(kfp, capsys, tmp_path):
    """A local data source or store is still sent (a pod may mount it), with one warning each."""
    local = ["--set", f"data.source={tmp_path}/t.parquet", "--set", f"storage.uri={tmp_path}"]
    assert submit(kfp, *local) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: data.source '{tmp_path}/t.parquet' is a local path, which no cluster pod can "
        "read; the run will fail on the cluster; use an s3:// URI",
        f"warning: storage.uri '{tmp_path}' is a local path, which no cluster pod can read; the "
        "run will fail on the cluster; use an s3:// URI",
    ]
    argv = ["schedule", "--host", kfp.url, "--token", TOKEN, "--cron", "0 * * * *"]
    assert main([*argv, "--set", "storage.uri=s3://bucket/ml"]) == 0
    assert "warning" not in capsys.readouterr().err  # the built-in data and an S3 store: quiet
    assert main([*argv, "--name", "local", "--set", f"storage.uri={tmp_path}"]) == 0
    assert capsys.readouterr().err.count("warning: storage.uri") == 1
