from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def lm_export(config_json: str, run_id: str, finetune_uri: str) -> str:
    """Export the text classifier to ONNX (dynamic batch and sequence), check parity, write the
    servable package with its tokenizer."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.lm_export import run_lm_export

    return stage_entry(run_lm_export)(config_json, run_id, finetune_uri)
