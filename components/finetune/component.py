from kfp import dsl
from kfp.dsl import Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def finetune(
    config_json: str,
    run_id: str,
    data_uri: str,
    pretrain_uri: str,
    metrics: Output[Metrics],
    warm_start_uri: str = "",
    tune_uri: str = "",
) -> str:
    """Train a classifier on labelled data, starting from the pretrained encoder, or (warm
    start) from the registry version at ``warm_start_uri``; with the tune stage's best
    parameters when ``tune_uri`` is set."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.finetune import run_finetune

    return stage_entry(run_finetune)(
        config_json,
        run_id,
        data_uri,
        pretrain_uri,
        metrics=metrics,
        warm_start_uri=warm_start_uri,
        tune_uri=tune_uri,
    )
