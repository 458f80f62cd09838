"""``trainpipe run``: the whole KFP DAG on this machine through ``kfp.local``.

Each component runs as a subprocess of the current Python (SubprocessRunner, no Docker), in the
same order and with the same branches as on a cluster. Afterwards the manifests each stage
committed are read back into a summary: wall time, metrics, the gate's decision and reason, and
where every artifact is.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from trainpipe.artifacts import ArtifactSet
from trainpipe.config import Config
from trainpipe.data.datasets import check_source
from trainpipe.errors import TrainpipeError
from trainpipe.kfp_output import quiet_kfp_output
from trainpipe.stages.context import STAGES, run_prefix
from trainpipe.stages.lm_data import check_lm_sources
from trainpipe.storage import ArtifactNotFound, FileStore, StorageError, open_store
from trainpipe.tune.space import searches_pretraining

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")


class PipelineFailed(TrainpipeError):
    """A stage of the local run failed; its own error line is in the log above."""


@dataclass
class StageResult:
    stage: str
    status: str
    wall_s: float | None = None
    uri: str = ""
    summary: dict = field(default_factory=dict)


@dataclass
class RunSummary:
    run_id: str
    stages: list[StageResult]
    wall_s: float
    log_uri: str = ""
    """The run's full console log (kfp.local, every stage's output, library messages)."""

    def stage(self, name: str) -> StageResult:
        return next((s for s in self.stages if s.stage == name), StageResult(name, "not run"))

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "wall_s": self.wall_s,
            "log_uri": self.log_uri,
            "stages": [s.__dict__ for s in self.stages],
        }


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve_storage(cfg: Config) -> Config:
    """Make a relative local storage path absolute: component subprocesses share no cwd."""
    uri = cfg.storage.uri
    if "://" in uri:
        return cfg
    absolute = f"file://{Path(uri).resolve()}"
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"uri": absolute})})


def stages_of(cfg: Config, *, tune_only: bool = False) -> tuple[str, ...]:
    """The stages a run has: when enabled, tune sits before finetune (before pretrain when
    it searches pretraining keys); the language-model DAG has its own first steps."""
    if cfg.language_model.enabled:
        first = ("lm_data",) + (() if cfg.language_model.hf_checkpoint_uri else ("lm_pretrain",))
        return (*first, "lm_finetune", *STAGES[3:])
    if not (cfg.tune.enabled or tune_only):
        return STAGES
    at = 1 if searches_pretraining(cfg.tune.space) else 2
    stages = (*STAGES[:at], "tune", *STAGES[at:])
    return stages[: stages.index("tune") + 1] if tune_only else stages


@contextlib.contextmanager
def kfp_workspace(cfg: Config) -> Iterator[Path]:
    """Where kfp.local keeps its working files: ``kfp-local/`` beside the artifacts when storage
    is a local folder, else a temporary folder removed after the run (nothing lands in the
    current directory)."""
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    if isinstance(store, FileStore):
        root = store.root / "kfp-local"
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="trainpipe-kfp-local-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def kfp_local_session(cfg: Config, run_id: str, kfp_root: Path | None = None) -> Iterator[str]:
    """kfp.local set up in ``kfp_root`` (default: :func:`kfp_workspace`) with a quiet console;
    everything kfp.local and the stages print goes to ``runs/<run_id>/run.log`` in the artifact
    store (also when the run fails). Yields that log's URI."""
    from kfp import local

    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    log_key = f"{run_prefix(run_id)}/run.log"
    workspace = kfp_workspace(cfg) if kfp_root is None else contextlib.nullcontext(kfp_root)
    with workspace as root:
        root.mkdir(parents=True, exist_ok=True)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        log_path = root / f"{run_id}.log"
        try:
            with quiet_kfp_output(log_path):
                yield store.uri_for(log_key)
        finally:
            store.put_file(log_key, log_path)
            log_path.unlink(missing_ok=True)


def run_locally(cfg: Config, *, run_id: str | None = None, tune_only: bool = False) -> RunSummary:
    """Preflight, run the DAG with kfp.local, and summarize what the stages committed.

    ``tune_only`` runs validate_data, pretrain and tune only (``trainpipe tune``). The console
    shows progress and stage lines only; everything kfp.local and the stages print is kept in
    ``runs/<run_id>/run.log`` in the artifact store (its URI is in the summary)."""
    import time

    from trainpipe.pipelines.training import batch_pipeline
    from trainpipe.pipelines.tuning import build_tuning_pipeline

    cfg = resolve_storage(cfg)
    # Fail before anything runs.
    if cfg.language_model.enabled:
        check_lm_sources(cfg)
    else:
        check_source(cfg.data, endpoint_url=cfg.storage.endpoint_url)
    run_id = run_id or new_run_id()
    started = time.monotonic()
    failure: Exception | None = None
    with kfp_local_session(cfg, run_id) as log_uri:
        pipeline = (build_tuning_pipeline if tune_only else batch_pipeline)(cfg, retries=0)
        try:
            pipeline(config_json=cfg.to_json(), run_id=run_id)
        except RuntimeError as exc:
            failure = exc
    stages = stages_of(cfg, tune_only=tune_only)
    wall_s = time.monotonic() - started
    if failure is None:
        return collect_summary(cfg, run_id, wall_s, stages=stages, log_uri=log_uri)
    with contextlib.suppress(StorageError):  # the failure is the news, not the summary
        collect_summary(cfg, run_id, wall_s, stages=stages, log_uri=log_uri)
    raise PipelineFailed(
        f"the pipeline failed at stage {failed_stage(failure)!r} (run {run_id}); its error line "
        f"is above and the full log is {log_uri}"
    )


def failed_stage(failure: Exception) -> str:
    """The stage kfp.local names as the failed task (its message is colored)."""
    found = _FAILED_TASK.search(_ANSI.sub("", str(failure)))
    if found is None:
        return "unknown"
    task = found.group(1).replace("-", "_")
    return next((stage for stage in STAGES if task.startswith(stage)), task)


def collect_summary(
    cfg: Config,
    run_id: str,
    wall_s: float,
    *,
    stages: tuple[str, ...] | None = None,
    log_uri: str = "",
) -> RunSummary:
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    results = []
    for stage in stages or stages_of(cfg):
        uri = store.uri_for(f"{run_prefix(run_id)}/{stage}")
        try:
            artifacts = ArtifactSet.open(uri, endpoint_url=cfg.storage.endpoint_url)
        except ArtifactNotFound:
            results.append(StageResult(stage, "missing"))
            continue
        results.append(
            StageResult(stage, "done", artifacts.manifest["wall_s"], uri, artifacts.summary)
        )
    gate = next((r for r in results if r.stage == "gate"), StageResult("gate", "not run"))
    if gate.status == "done" and gate.summary.get("decision") != "promote":
        for result in results:
            if result.stage in ("register", "deploy") and result.status == "missing":
                result.status = "skipped (gate)"
    summary = RunSummary(run_id, results, round(wall_s, 1), log_uri)
    store.put_json(f"{run_prefix(run_id)}/summary.json", summary.to_dict())
    return summary


def format_summary(summary: RunSummary) -> str:
    lines = [f"run {summary.run_id} finished in {summary.wall_s:.1f} s", ""]
    lines.append(f"{'stage':<14}{'status':<16}{'wall s':>8}  artifacts")
    for s in summary.stages:
        wall = f"{s.wall_s:8.1f}" if s.wall_s is not None else f"{'-':>8}"
        lines.append(f"{s.stage:<14}{s.status:<16}{wall}  {s.uri}")
    evaluation = summary.stage("evaluate").summary
    if evaluation and evaluation.get("task") == "regression":
        lines += [
            "",
            f"test R^2 {evaluation['r2']:.4f}   RMSE {evaluation['rmse']:.4g}   MAE "
            f"{evaluation['mae']:.4g}   ({evaluation['num_examples']} examples)",
        ]
    elif evaluation:
        lines += [
            "",
            f"test accuracy {evaluation['accuracy']:.4f}   macro-F1 {evaluation['macro_f1']:.4f}"
            f"   log loss {evaluation['log_loss']:.4f}   ({evaluation['num_examples']} examples)",
        ]
    tuned = summary.stage("tune").summary
    if tuned:
        lines.append(format_tune(tuned))
    baselines = evaluation.get("baselines") if evaluation else None
    if baselines:
        lines.append(
            f"baselines on the same split ({baselines['metric']}): network "
            f"{baselines['network']:.4f}, linear {baselines['linear']:.4f}, gradient-boosted "
            f"trees {baselines['hgb']:.4f}"
            + (
                f" (the model blends in the linear one at weight "
                f"{baselines['linear_weight_in_model']:.2f}"
                + (
                    f" and the trees at {baselines['trees_weight_in_model']:.2f}"
                    if baselines.get("trees_weight_in_model")
                    else ""
                )
                + ")"
                if baselines.get("linear_weight_in_model") or baselines.get("trees_weight_in_model")
                else ""
            )
        )
    finetuned = summary.stage("finetune").summary
    if "scratch_val_score" in finetuned:
        lines.append(
            f"initialization: {finetuned['initialization']} ships; with "
            f"{finetuned['labelled_examples']} labels, pretrained "
            f"{finetuned['pretrained_val_score']:.4f} vs from scratch "
            f"{finetuned['scratch_val_score']:.4f} validation {finetuned['score']} "
            f"({finetuned['pretraining_gain_val']:+.4f})"
        )
    if evaluation.get("diagnosis_line"):
        lines.append(f"learning curves: {evaluation['diagnosis_line']}")
    elif finetuned.get("diagnosis"):
        lines.append(f"learning curves: {finetuned['diagnosis']}")
    lm = summary.stage("lm_pretrain").summary
    if lm:
        mfu = f"{lm['mfu']:.1%}" if lm.get("mfu") is not None else "n/a"
        speed = f"{lm['tokens_per_s']:,.0f}" if lm.get("tokens_per_s") else "n/a"
        lines.append(
            f"language model ({lm['kind']}, {lm['num_params']:,} parameters): validation "
            f"perplexity {lm['val_perplexity']:.2f}, test {lm['test_perplexity']:.2f}; "
            f"{speed} tokens/s, MFU {mfu}"
        )
    gate = summary.stage("gate").summary
    if gate:
        lines.append(f"gate: {gate['decision'].upper()} ({gate['reason']})")
    registered = summary.stage("register").summary
    if registered:
        lines.append(f"champion: version {registered['version']} at {registered['uri']}")
    deployed = summary.stage("deploy").summary
    if deployed:
        lines.append(
            f"deploy: smoke inference of {deployed['smoke_examples']} examples matched in "
            f"{deployed['smoke_latency_ms']} ms (server ready in {deployed['ready_s']} s)"
        )
    if summary.log_uri:
        lines.append(f"full log (every stage's output and library messages): {summary.log_uri}")
    return "\n".join(lines)


def format_tune(tuned: dict) -> str:
    """The search in two lines: the best trial against the untuned default, and its params."""
    against = ""
    if tuned.get("gain") is not None:
        against = f" vs default {tuned['baseline_value']:.4f} (gain {tuned['gain']:+.4f})"
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in tuned["params"].items()
    )
    return (
        f"tune: best trial #{tuned['trial']} of {tuned['trials']} ({tuned['strategy']}): "
        f"validation {tuned['metric'].removeprefix('val_')} {tuned['value']:.4f}{against}; "
        f"{tuned['pruned']} pruned, {tuned['failed']} failed, "
        f"{tuned['epochs_run']}/{tuned['epochs_budget']} epochs\n  best: {params}"
    )
