from kfp import dsl
from kfp.dsl import Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def pretrain(
    config_json: str, run_id: str, data_uri: str, metrics: Output[Metrics], tune_uri: str = ""
) -> str:
    """Self-supervised pretraining of the encoder on unlabelled training inputs (with the tune
    stage's best parameters when the search covered pretraining)."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.pretrain import run_pretrain

    return stage_entry(run_pretrain)(
        config_json, run_id, data_uri, metrics=metrics, tune_uri=tune_uri
    )
