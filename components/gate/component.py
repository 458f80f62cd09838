from kfp import dsl
from kfp.dsl import OutputPath

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def gate(
    config_json: str,
    run_id: str,
    evaluate_uri: str,
    export_uri: str,
    decision_uri: OutputPath(str),
) -> str:
    """Return 'promote' or 'reject' (the pipeline's dsl.If branches on it); ``decision_uri``
    is the artifact set holding decision.json, which register takes as an input.

    The decision is the return value (``Output``) on purpose: kfp.local (2.17) resolves a
    condition on a task's ``Output`` but not on other named outputs.
    """
    from trainpipe.stages.entry import stage_entry
    from trainpipe.stages.gate import run_gate

    decision, uri = stage_entry(run_gate)(config_json, run_id, evaluate_uri, export_uri)
    with open(decision_uri, "w") as out:
        out.write(uri)
    return decision
