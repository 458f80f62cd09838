"""The tune step of the DAG, and a pipeline that stops after it (``trainpipe tune``).

    pretrain -> tune-search[ParallelFor(pod in range(tune.pods)): tune_worker -> tune]
        -> finetune(tune_uri)

Every ``tune_worker`` pod gets the training stages' cluster settings (GPUs, /dev/shm, node
selector, tolerations, retries); they share one optuna study in the artifact store, so pods and
the processes inside them draw trials from one budget. ``tune`` collects the study once the
loop is done (``dsl.Collected`` of the workers' outputs) and outputs the artifact set whose
``best.json`` finetune applies.
"""

from collections.abc import Callable

from kfp import dsl

from trainpipe.components.tune.component import tune
from trainpipe.components.tune_worker.component import tune_worker
from trainpipe.config import Config


def tune_search_component(cfg: Config, on_cluster: Callable[..., None], *, gpu: bool, retries: int):
    """The tune step as a pipeline component (call it inside the outer pipeline with
    config_json, run_id, data_uri, pretrain_uri; its output is the tune artifact set's URI).
    ``on_cluster(task, cfg, gpu=..., retries=...)`` is the pipeline's cluster-settings helper.

    The loop sits in a nested pipeline whose inputs are the upstream outputs: kfp.local 2.17
    replaces every upstream *task output* a ParallelFor consumes directly with the loop item,
    while it resolves the inputs of a nested pipeline correctly. It must be built outside the
    outer pipeline's body (KFP refuses to define a pipeline inside another).
    """

    @dsl.pipeline(name="tune-search", description="Trial workers in parallel, then collect.")
    def tune_search(config_json: str, run_id: str, data_uri: str, pretrain_uri: str) -> str:
        with dsl.ParallelFor(
            items=list(range(cfg.tune.pods)), parallelism=cfg.tune.pods, name="tune-trials"
        ) as pod:
            worker = tune_worker(
                config_json=config_json,
                run_id=run_id,
                data_uri=data_uri,
                pretrain_uri=pretrain_uri,
                pod=pod,
            ).set_display_name("tune trials")
            on_cluster(worker, cfg, gpu=gpu, retries=retries)
        collected = tune(
            config_json=config_json,
            run_id=run_id,
            data_uri=data_uri,
            pretrain_uri=pretrain_uri,
            worker_uris=dsl.Collected(worker.output),
        ).set_display_name("tune")
        on_cluster(collected, cfg, gpu=False, retries=0)
        return collected.outputs["Output"]

    return tune_search


def build_tuning_pipeline(cfg: Config, *, retries: int | None = None):
    """validate_data -> pretrain -> tune (or validate_data -> tune when the search covers
    pretraining): the search alone, for ``trainpipe tune``."""
    from trainpipe.pipelines.training import on_cluster, validate_pretrain_tune

    train_retries = cfg.cluster.retries if retries is None else retries
    tune_search = tune_search_component(cfg, on_cluster, gpu=True, retries=train_retries)

    @dsl.pipeline(
        name=f"{cfg.pipeline_name}-tune",
        description="Validate, pretrain, and search fine-tuning hyperparameters.",
    )
    def tuning_pipeline(config_json: str = cfg.to_json(), run_id: str = ""):
        validate_pretrain_tune(
            cfg,
            config_json,
            run_id,
            train_retries=train_retries,
            tune_search=tune_search,
            pretrain_needed=False,
        )

    return tuning_pipeline
