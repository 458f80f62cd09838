from typing import NamedTuple

from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def lm_data(config_json: str, run_id: str, job_id: str) -> NamedTuple(
    "LMDataOutputs", [("run_id", str), ("data_uri", str)]
):
    """Read and check the pretraining corpus and the labelled text, fix their splits, train (or
    load) the tokenizer; returns the run id and the stored data's URI."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.lm_data import run_lm_data

    return stage_entry(run_lm_data)(config_json, run_id, job_id)
