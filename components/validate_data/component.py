from typing import NamedTuple

from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def validate_data(config_json: str, run_id: str, job_id: str) -> NamedTuple(
    "ValidateOutputs", [("run_id", str), ("data_uri", str)]
):
    """Read the configured dataset, check it, split it and store the splits."""
    from trainpipe.stages.validate import run_validate

    return run_validate(config_json, run_id, job_id)
