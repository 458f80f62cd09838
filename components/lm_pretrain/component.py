from kfp import dsl
from kfp.dsl import Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def lm_pretrain(config_json: str, run_id: str, data_uri: str, metrics: Output[Metrics]) -> str:
    """Pretrain the causal or masked language model; validation/test perplexity, tokens/s and
    MFU go to the KFP UI."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.lm_pretrain import run_lm_pretrain

    return stage_entry(run_lm_pretrain)(config_json, run_id, data_uri, metrics=metrics)
