"""The language-model DAG.

    lm_data -> lm_pretrain -> lm_finetune -> lm_evaluate  -> gate -> dsl.If(promote):
                                          -> lm_export   /           register -> deploy

(no lm_pretrain when ``language_model.hf_checkpoint_uri`` names a Hugging Face checkpoint:
lm_finetune starts from it). The gate, register and deploy steps are the table/image DAG's
own components: lm_evaluate writes the metrics and comparison files the gate reads (plus the
LM's perplexity for ``gate.max_perplexity``), lm_export writes a model package register
copies with its tokenizer, and deploy checks a text package by sending the test texts to the
real server.

``build_lm_pipeline(cfg)`` returns a ``@dsl.pipeline`` function with ``cfg`` as its default
config; ``trainpipe run``/``compile``/``submit``/``schedule`` build it when
``language_model.enabled`` is true (``trainpipe.pipelines.training.batch_pipeline``). The
training steps get the cluster's GPUs, /dev/shm, node selector, tolerations and retries through
the same ``on_cluster`` as the table DAG; ``kfp.local`` ignores them.
"""

from kfp import dsl

from trainpipe.components.deploy.component import deploy
from trainpipe.components.lm_data.component import lm_data
from trainpipe.components.lm_evaluate.component import lm_evaluate
from trainpipe.components.lm_export.component import lm_export
from trainpipe.components.lm_finetune.component import lm_finetune
from trainpipe.components.lm_pretrain.component import lm_pretrain
from trainpipe.config import Config
from trainpipe.evaluate.gate import PROMOTE
from trainpipe.pipelines.training import gate_on, on_cluster, promote


def build_lm_pipeline(cfg: Config, *, retries: int | None = None):
    """The language-model pipeline function with ``cfg`` baked in as its default config.

    ``retries`` overrides ``cfg.cluster.retries`` for the training steps; local runs pass 0.
    """
    train_retries = cfg.cluster.retries if retries is None else retries
    pretrains = not cfg.language_model.hf_checkpoint_uri

    @dsl.pipeline(
        name=cfg.pipeline_name,
        description="Text data and tokenizer, LM pretraining, text-classifier fine-tuning, "
        "evaluate, export, gate, register, deploy.",
    )
    def language_model_pipeline(config_json: str = cfg.to_json(), run_id: str = ""):
        data = lm_data(
            config_json=config_json, run_id=run_id, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
        ).set_display_name("text data and tokenizer")
        on_cluster(data, cfg, gpu=False, retries=0)
        run, data_uri = data.outputs["run_id"], data.outputs["data_uri"]

        pretrain_uri = ""
        if pretrains:
            pretrained = lm_pretrain(
                config_json=config_json, run_id=run, data_uri=data_uri
            ).set_display_name("pretrain language model")
            on_cluster(pretrained, cfg, gpu=True, retries=train_retries)
            pretrain_uri = pretrained.outputs["Output"]
        finetuned = lm_finetune(
            config_json=config_json, run_id=run, data_uri=data_uri, pretrain_uri=pretrain_uri
        ).set_display_name("fine-tune text classifier")
        on_cluster(finetuned, cfg, gpu=True, retries=train_retries)

        evaluated = lm_evaluate(
            config_json=config_json,
            run_id=run,
            data_uri=data_uri,
            finetune_uri=finetuned.outputs["Output"],
        ).set_display_name("evaluate")
        on_cluster(evaluated, cfg, gpu=False, retries=0)
        exported = lm_export(
            config_json=config_json, run_id=run, finetune_uri=finetuned.outputs["Output"]
        ).set_display_name("export onnx")
        on_cluster(exported, cfg, gpu=False, retries=0)
        decided = gate_on(cfg, config_json, run, evaluated, exported)

        with dsl.If(decided.outputs["Output"] == PROMOTE, name="gate-passed"):
            registered = promote(cfg, config_json, run, evaluated, exported, decided)
            deployed = deploy(
                config_json=config_json, run_id=run, model_uri=registered.output, data_uri=data_uri
            )
            on_cluster(deployed, cfg, gpu=False, retries=0)

    return language_model_pipeline
