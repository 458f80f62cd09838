from kfp import dsl
from kfp.dsl import Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def lm_finetune(
    config_json: str, run_id: str, data_uri: str, pretrain_uri: str, metrics: Output[Metrics]
) -> str:
    """Fine-tune a text classifier from the pretrained LM (``pretrain_uri``) or, when it is
    empty, from the configured Hugging Face checkpoint (full, linear probe, LoRA, ...)."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.lm_finetune import run_lm_finetune

    return stage_entry(run_lm_finetune)(
        config_json, run_id, data_uri, pretrain_uri, metrics=metrics
    )
