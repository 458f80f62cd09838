"""The continual DAG: the batch pipeline's stages, planned and finished by the continual steps.

    exit handler: continual_release (the lease, after success or failure)
      continual_plan -> skip | advance | warm_start | full_retrain
        advance:      continual_finish                       (all rejected / already registered)
        warm_start:   finetune(warm_start_uri = champion)
        full_retrain: pretrain -> finetune
        then:         evaluate -> export_onnx -> gate (with the forgetting bound)
                        promote: register -> continual_finish
                        reject:  continual_finish

``build_continual_pipeline(cfg)`` returns a ``@dsl.pipeline`` function with ``cfg`` as its
default config, for ``kfp.local`` (``trainpipe run --continual``), the compiler (``trainpipe
compile --continual``) and a KFP recurring run (``trainpipe schedule --continual``). Cluster
settings come from ``cfg.cluster`` through the batch pipeline's ``on_cluster``. Deploy is not
part of it: the serving rollout follows the champion pointer.
"""

from kfp import dsl

from trainpipe.components.continual_finish.component import continual_finish
from trainpipe.components.continual_plan.component import continual_plan
from trainpipe.components.continual_release.component import continual_release
from trainpipe.components.finetune.component import finetune
from trainpipe.components.pretrain.component import pretrain
from trainpipe.config import Config
from trainpipe.continual.driver import ADVANCE, SKIP, WARM_START
from trainpipe.evaluate.gate import PROMOTE
from trainpipe.pipelines.training import judge, on_cluster, promote


def build_continual_pipeline(cfg: Config, *, retries: int | None = None):
    """The continual pipeline function with ``cfg`` baked in as its default config.

    ``retries`` overrides ``cfg.cluster.retries`` for the training steps; local runs pass 0.
    """
    train_retries = cfg.cluster.retries if retries is None else retries
    train_in_pod = cfg.cluster.num_nodes == 1

    @dsl.pipeline(
        name=f"{cfg.pipeline_name}-continual",
        description="Continual retraining: new partitions, validate with drift, warm start "
        "with replay or full retrain, evaluate, export, gate (forgetting bound), register, "
        "advance the watermark; the lease is released by the exit handler.",
    )
    def continual_pipeline(config_json: str = cfg.to_json(), run_id: str = ""):
        job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        release = continual_release(config_json=config_json, run_id=run_id, job_id=job_id)
        release.set_display_name("release lease")
        on_cluster(release, cfg, gpu=False, retries=0)
        with dsl.ExitHandler(release, name="under-lease"):
            planned = continual_plan(config_json=config_json, run_id=run_id, job_id=job_id)
            planned.set_display_name("plan: partitions, validation, data")
            on_cluster(planned, cfg, gpu=False, retries=0)
            action = planned.outputs["Output"]
            run = planned.outputs["run"]
            data_uri = planned.outputs["data_uri"]
            plan_uri = planned.outputs["plan_uri"]

            with dsl.If(action != SKIP, name="new-partitions"):
                with dsl.If(action == ADVANCE, name="nothing-to-train"):
                    advanced = continual_finish(
                        config_json=config_json, run_id=run, plan_uri=plan_uri
                    ).set_display_name("advance watermark")
                    on_cluster(advanced, cfg, gpu=False, retries=0)
                with dsl.Else(name="train"):
                    with dsl.If(action == WARM_START, name="warm-start"):
                        warm = finetune(
                            config_json=config_json,
                            run_id=run,
                            data_uri=data_uri,
                            pretrain_uri="",
                            warm_start_uri=planned.outputs["warm_start_uri"],
                        ).set_display_name("finetune (warm start)")
                        on_cluster(warm, cfg, gpu=train_in_pod, retries=train_retries)
                    with dsl.Else(name="full-retrain"):
                        pretrained = pretrain(
                            config_json=config_json, run_id=run, data_uri=data_uri
                        )
                        on_cluster(pretrained, cfg, gpu=train_in_pod, retries=train_retries)
                        full = finetune(
                            config_json=config_json,
                            run_id=run,
                            data_uri=data_uri,
                            pretrain_uri=pretrained.outputs["Output"],
                        )
                        on_cluster(full, cfg, gpu=train_in_pod, retries=train_retries)
                    finetune_uri = dsl.OneOf(warm.outputs["Output"], full.outputs["Output"])

                    evaluated, exported, decided = judge(
                        cfg, config_json, run, data_uri, finetune_uri
                    )
                    with dsl.If(decided.outputs["Output"] == PROMOTE, name="gate-passed"):
                        registered = promote(cfg, config_json, run, evaluated, exported, decided)
                        promoted = continual_finish(
                            config_json=config_json,
                            run_id=run,
                            plan_uri=plan_uri,
                            evaluate_uri=evaluated.outputs["Output"],
                            gate_uri=decided.outputs["decision_uri"],
                            register_uri=registered.output,
                        ).set_display_name("advance watermark")
                        on_cluster(promoted, cfg, gpu=False, retries=0)
                    with dsl.Else(name="gate-rejected"):
                        kept = continual_finish(
                            config_json=config_json,
                            run_id=run,
                            plan_uri=plan_uri,
                            evaluate_uri=evaluated.outputs["Output"],
                            gate_uri=decided.outputs["decision_uri"],
                        ).set_display_name("advance watermark")
                        on_cluster(kept, cfg, gpu=False, retries=0)

    return continual_pipeline
