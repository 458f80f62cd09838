from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def deploy(config_json: str, run_id: str, model_uri: str, data_uri: str) -> str:
    """Check the new champion in the real server (answers, accuracy, latency), then roll out."""
    from trainpipe.stages.deploy import run_deploy
    from trainpipe.stages.entry import stage_entry

    return stage_entry(run_deploy)(config_json, run_id, model_uri, data_uri)
