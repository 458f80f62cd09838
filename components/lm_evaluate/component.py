from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def lm_evaluate(
    config_json: str,
    run_id: str,
    data_uri: str,
    finetune_uri: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
) -> str:
    """Score the text classifier and the registry champion on the same test texts (and carry
    the LM's perplexity); the files the shared gate reads."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.lm_evaluate import run_lm_evaluate

    return stage_entry(run_lm_evaluate)(
        config_json, run_id, data_uri, finetune_uri, metrics, confusion, report
    )
