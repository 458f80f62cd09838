"""One continual run on this machine: the continual DAG through ``kfp.local``.

    outcome = run_continual(cfg)
    print(outcome.message)

Each component runs as a subprocess of this Python, in the order and with the branches a KFP
cluster runs them; the console shows stage lines, the full log goes to ``runs/<run_id>/run.log``
in the store, kfp.local's working files beside the store (or in a temporary folder).
Afterwards the run's ``outcome.json`` is read back; a run that wrote nothing
(nothing new, or another run held the lease) is recognized from the lease record.
"""

from __future__ import annotations

from pathlib import Path

from trainpipe.config import Config
from trainpipe.continual.driver import (
    LEASE_HELD,
    NOTHING_TO_DO,
    OUTCOME_STAGE,
    Outcome,
    resolve_continual,
)
from trainpipe.continual.lease import held_message, lease_key
from trainpipe.errors import TrainpipeError
from trainpipe.local_run import PipelineFailed, kfp_local_session, new_run_id
from trainpipe.stages.context import run_prefix
from trainpipe.storage import open_store


def run_continual(
    cfg: Config, *, kfp_root: Path | None = None, run_id: str | None = None
) -> Outcome:
    """Run the continual DAG once; raises PipelineFailed when a step failed (the watermark
    did not advance and the exit handler released the lease). ``kfp_root``: kfp.local's
    working folder (default: beside a local store, else a temporary folder)."""
    from trainpipe.pipelines.continual import build_continual_pipeline

    cfg = resolve_continual(cfg)
    run_id = run_id or new_run_id()
    failed = False
    with kfp_local_session(cfg, run_id, kfp_root) as log_uri:
        pipeline = build_continual_pipeline(cfg, retries=0)
        try:
            pipeline(config_json=cfg.to_json(), run_id=run_id)
        except RuntimeError:
            failed = True
    if failed:
        raise PipelineFailed(
            f"the continual pipeline failed (run {run_id}); its error line is above and the full "
            f"log is {log_uri}. The watermark did not advance, so the next run takes the same "
            "partitions again"
        )
    return read_outcome(cfg, run_id)


def read_outcome(cfg: Config, run_id: str) -> Outcome:
    """What run ``run_id`` decided: its outcome.json, else what it left in the lease record."""
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    key = f"{run_prefix(run_id)}/{OUTCOME_STAGE}/outcome.json"
    if store.exists(key):
        return Outcome(**store.get_json(key))
    model = cfg.registry.model_name
    lease = store.get_json(lease_key(model)) if store.exists(lease_key(model)) else {}
    if lease.get("holder") == run_id and "outcome" in lease:
        return Outcome(run_id, NOTHING_TO_DO, lease["outcome"])
    if lease.get("holder") not in (None, run_id):
        return Outcome(run_id, LEASE_HELD, held_message(model, lease))
    raise TrainpipeError(f"continual run {run_id} ended without recording an outcome")
