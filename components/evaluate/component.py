from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Metrics, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def evaluate(
    config_json: str,
    run_id: str,
    data_uri: str,
    finetune_uri: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
) -> str:
    """Score the fine-tuned model and the registry champion on the test split; publish metrics,
    the confusion matrix and an HTML report."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.evaluate import run_evaluate

    return stage_entry(run_evaluate)(
        config_json, run_id, data_uri, finetune_uri, metrics, confusion, report
    )
