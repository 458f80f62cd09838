from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def tune(
    config_json: str,
    run_id: str,
    data_uri: str,
    pretrain_uri: str,
    worker_uris: list[str],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> str:
    """Collect the trials of every tune worker: the best parameters, the report, KFP Metrics."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.tune import run_tune

    return stage_entry(run_tune)(config_json, run_id, data_uri, pretrain_uri, metrics, report)
