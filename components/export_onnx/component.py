from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def export_onnx(config_json: str, run_id: str, data_uri: str, finetune_uri: str) -> str:
    """Export to ONNX, check it against torch, time optimization levels, optionally int8."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.export import run_export

    return stage_entry(run_export)(config_json, run_id, data_uri, finetune_uri)
