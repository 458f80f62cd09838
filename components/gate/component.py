from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def gate(config_json: str, run_id: str, evaluate_uri: str, export_uri: str) -> str:
    """Return 'promote' or 'reject'; the pipeline's dsl.If branches on it.

    The decision is the single output on purpose: kfp.local (2.17) resolves conditions on a
    task's ``Output`` but not on named outputs of multi-output tasks. The reasons are stored
    with the gate's artifacts.
    """
    from trainpipe.stages.gate import run_gate

    return run_gate(config_json, run_id, evaluate_uri, export_uri)
