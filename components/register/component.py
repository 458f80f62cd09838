from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def register(
    config_json: str, run_id: str, export_uri: str, evaluate_uri: str, gate_uri: str
) -> str:
    """Store the model as a new registry version and make it the champion (compare-and-swap
    against the champion recorded in the gate's decision.json at ``gate_uri``)."""
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.register import run_register

    return stage_entry(run_register)(config_json, run_id, export_uri, evaluate_uri, gate_uri)
