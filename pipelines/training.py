"""The trainpipe DAG.

    validate_data -> pretrain -> [tune, when tune.enabled] -> finetune -> evaluate
        -> export_onnx -> gate -> dsl.If(decision == "promote"): register -> deploy

(with pretraining keys in tune.space the tune step comes before pretrain instead).

``build_pipeline(cfg)`` returns a ``@dsl.pipeline`` function whose defaults are the given
config, ready for ``kfp.local`` (``trainpipe run``) or the compiler (``trainpipe compile``).
Cluster settings (image, GPUs, /dev/shm, retries, the S3 Secret) come from ``cfg.cluster`` and
only shape the compiled IR; ``kfp.local`` ignores them.
"""

from kfp import dsl, kubernetes

from trainpipe.components.deploy.component import deploy
from trainpipe.components.evaluate.component import evaluate
from trainpipe.components.export_onnx.component import export_onnx
from trainpipe.components.finetune.component import finetune
from trainpipe.components.gate.component import gate
from trainpipe.components.pretrain.component import pretrain
from trainpipe.components.register.component import register
from trainpipe.components.validate_data.component import validate_data
from trainpipe.config import Config
from trainpipe.errors import ConfigError
from trainpipe.evaluate.gate import PROMOTE
from trainpipe.pipelines.tuning import tune_search_component
from trainpipe.tune.space import searches_pretraining

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def on_cluster(task: dsl.PipelineTask, cfg: Config, *, gpu: bool, retries: int) -> None:
    """Image, S3 credentials and (for training) GPUs, shared memory, node selector,
    tolerations and retries; the batch and the continual pipeline share it."""
    cluster = cfg.cluster
    task.set_container_image(cluster.image)
    if cluster.s3_secret_name:
        kubernetes.use_secret_as_env(
            task,
            secret_name=cluster.s3_secret_name,
            secret_key_to_env={key: key for key in S3_SECRET_KEYS},
        )
    if cfg.storage.endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL", cfg.storage.endpoint_url)
    if gpu and cluster.gpus_per_node > 0:
        task.set_accelerator_type(cluster.accelerator_type)
        task.set_accelerator_limit(cluster.gpus_per_node)
    if gpu:
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=cluster.shm_size,
        )
        for label_key, label_value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, label_key=label_key, label_value=label_value)
        for t in cluster.tolerations:
            kubernetes.add_toleration(
                task,
                key=t.key or None,
                operator=t.operator,
                value=t.value or None,
                effect=t.effect,
                toleration_seconds=t.tolerationSeconds,
            )
    if retries:
        task.set_retry(num_retries=retries, backoff_duration=f"{cluster.retry_backoff_s}s")


def judge(cfg: Config, config_json, run, data_uri, finetune_uri):
    """evaluate, export_onnx and gate of a fine-tuned model, as both DAGs wire them; returns
    the three tasks."""
    evaluated = evaluate(
        config_json=config_json, run_id=run, data_uri=data_uri, finetune_uri=finetune_uri
    )
    on_cluster(evaluated, cfg, gpu=False, retries=0)
    exported = export_onnx(
        config_json=config_json, run_id=run, data_uri=data_uri, finetune_uri=finetune_uri
    ).set_display_name("export onnx")
    on_cluster(exported, cfg, gpu=False, retries=0)
    return evaluated, exported, gate_on(cfg, config_json, run, evaluated, exported)


def gate_on(cfg: Config, config_json, run, evaluated, exported) -> dsl.PipelineTask:
    """The shared gate over an evaluate task and an export task (table or text)."""
    decided = gate(
        config_json=config_json,
        run_id=run,
        evaluate_uri=evaluated.outputs["Output"],
        export_uri=exported.output,
    )
    on_cluster(decided, cfg, gpu=False, retries=0)
    return decided


def promote(cfg: Config, config_json, run, evaluated, exported, decided) -> dsl.PipelineTask:
    """register, inside the gate-passed branch: the gate's decision.json is its input."""
    registered = register(
        config_json=config_json,
        run_id=run,
        export_uri=exported.output,
        evaluate_uri=evaluated.outputs["Output"],
        gate_uri=decided.outputs["decision_uri"],
    )
    on_cluster(registered, cfg, gpu=False, retries=0)
    return registered


def validate_pretrain_tune(
    cfg: Config,
    config_json,
    run_id,
    *,
    train_retries: int,
    tune_search=None,
    pretrain_needed: bool = True,
):
    """The DAG up to fine-tuning, shared by the training and the tuning pipeline:
    validate_data -> pretrain -> [tune], or validate_data -> tune -> pretrain when the search
    covers pretraining keys (each trial pretrains; pretrain then takes the best of them).

    Returns the run id, the validated data's URI, the pretrain task (None when the tuning
    pipeline does not need it) and the tune result's URI ("" without a search)."""
    validated = validate_data(
        config_json=config_json, run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
    ).set_display_name("validate data")
    on_cluster(validated, cfg, gpu=False, retries=0)
    run = validated.outputs["run_id"]
    data_uri = validated.outputs["data_uri"]

    def search(pretrain_uri):
        return (
            tune_search(
                config_json=config_json, run_id=run, data_uri=data_uri, pretrain_uri=pretrain_uri
            )
            .set_display_name("tune")
            .output
        )

    tune_uri = ""
    tune_first = tune_search is not None and searches_pretraining(cfg.tune.space)
    if tune_first:
        tune_uri = search("")
        if not pretrain_needed:
            return run, data_uri, None, tune_uri
    pretrained = pretrain(
        config_json=config_json,
        run_id=run,
        data_uri=data_uri,
        **({"tune_uri": tune_uri} if tune_first else {}),
    )
    # With several nodes the training pods are the TrainJob's; the component pod only launches
    # and watches it, so it must not hold GPUs (or wait for GPU nodes) meanwhile.
    on_cluster(pretrained, cfg, gpu=cfg.cluster.num_nodes == 1, retries=train_retries)
    if tune_search is not None and not tune_first:
        tune_uri = search(pretrained.outputs["Output"])
    return run, data_uri, pretrained, tune_uri


def build_pipeline(cfg: Config, *, retries: int | None = None):
    """The pipeline function with ``cfg`` baked in as its default config.

    ``retries`` overrides ``cfg.cluster.retries``; local runs pass 0 so a bad input fails once.
    """
    train_retries = cfg.cluster.retries if retries is None else retries
    # With several nodes the training pods are the TrainJob's; the component pod only launches
    # and watches it, so it must not hold GPUs (or wait for GPU nodes) meanwhile.
    train_in_pod = cfg.cluster.num_nodes == 1
    # The tune step is in the DAG when the config enables it (decided when the pipeline is
    # built, like the cluster settings).
    tune_search = (
        # Trial workers train in their own pods even when fine-tuning is a multi-node TrainJob.
        tune_search_component(cfg, on_cluster, gpu=True, retries=train_retries)
        if cfg.tune.enabled
        else None
    )

    @dsl.pipeline(
        name=cfg.pipeline_name,
        description="Validate, pretrain, fine-tune, evaluate, export, gate, register, deploy.",
    )
    def training_pipeline(config_json: str = cfg.to_json(), run_id: str = ""):
        run, data_uri, pretrained, tune_uri = validate_pretrain_tune(
            cfg, config_json, run_id, train_retries=train_retries, tune_search=tune_search
        )

        finetuned = finetune(
            config_json=config_json,
            run_id=run,
            data_uri=data_uri,
            pretrain_uri=pretrained.outputs["Output"],
            tune_uri=tune_uri,
        )
        on_cluster(finetuned, cfg, gpu=train_in_pod, retries=train_retries)

        evaluated, exported, decided = judge(
            cfg, config_json, run, data_uri, finetuned.outputs["Output"]
        )

        with dsl.If(decided.outputs["Output"] == PROMOTE, name="gate-passed"):
            registered = promote(cfg, config_json, run, evaluated, exported, decided)
            deployed = deploy(
                config_json=config_json,
                run_id=run,
                model_uri=registered.output,
                data_uri=data_uri,
            )
            on_cluster(deployed, cfg, gpu=False, retries=0)

    return training_pipeline


def batch_pipeline(cfg: Config, *, retries: int | None = None):
    """The pipeline ``trainpipe run``/``compile``/``submit`` build for ``cfg``: the
    language-model DAG when ``language_model.enabled``, else the table/image one."""
    if cfg.language_model.enabled:
        from trainpipe.pipelines.language_model import build_lm_pipeline

        return build_lm_pipeline(cfg, retries=retries)
    return build_pipeline(cfg, retries=retries)


def compile_pipeline(cfg: Config, output_path: str, *, continual: bool = False) -> None:
    """Write the IR YAML of the batch pipeline (the language-model one when the config enables
    it), or (``continual``) of the continual one."""
    from kfp import compiler

    if continual:
        from trainpipe.pipelines.continual import build_continual_pipeline

        if cfg.language_model.enabled:
            raise ConfigError(
                "usage error: --continual retrains table/image models; the language-model DAG "
                "has no continual pipeline (drop --continual or language_model.enabled)"
            )
        pipeline = build_continual_pipeline(cfg)
    else:
        pipeline = batch_pipeline(cfg)
    compiler.Compiler().compile(pipeline, package_path=output_path)
