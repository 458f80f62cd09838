from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def tune_worker(config_json: str, run_id: str, data_uri: str, pretrain_uri: str, pod: int) -> str:
    """Run this pod's share of the hyperparameter-search trials against the shared study."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.tune import run_tune_worker

    return stage_entry(run_tune_worker)(config_json, run_id, data_uri, pretrain_uri, pod)
