from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Output

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def validate_data(config_json: str, run_id: str, job_id: str, report: Output[HTML]) -> NamedTuple(
    "ValidateOutputs", [("run_id", str), ("data_uri", str)]
):
    """Read the configured dataset, validate it (schema, anomalies, drift), split it and store
    the splits; the HTML report shows in the KFP UI. Blocking anomalies fail the stage."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.validate import run_validate

    return stage_entry(run_validate)(config_json, run_id, job_id, html_report=report)
