from kfp import dsl
from kfp.dsl import OutputPath

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def continual_plan(
    config_json: str,
    run_id: str,
    job_id: str,
    run: OutputPath(str),
    data_uri: OutputPath(str),
    warm_start_uri: OutputPath(str),
    plan_uri: OutputPath(str),
) -> str:
    """Take the lease, list new partitions, validate them (accepted schema, drift), write the
    data set and return what to do: warm_start, full_retrain, advance or skip.

    The action is the return value (``Output``) because kfp.local (2.17) resolves a dsl.If on
    a task's ``Output`` but not on its other named outputs.
    """
    from trainpipe.config import Config
    from trainpipe.continual.driver import plan_run
    from trainpipe.stages.entry import stage_entry

    resolved = run_id or job_id
    plan = stage_entry(plan_run)(Config.from_json(config_json), resolved)
    print(f"[continual] {plan.action}: {plan.message}", flush=True)
    for path, value in (
        (run, resolved),
        (data_uri, plan.data_uri),
        (warm_start_uri, plan.warm_start_uri),
        (plan_uri, plan.plan_uri),
    ):
        with open(path, "w") as out:
            out.write(value)
    return plan.action
