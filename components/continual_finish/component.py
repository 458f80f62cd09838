from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def continual_finish(
    config_json: str,
    run_id: str,
    plan_uri: str,
    evaluate_uri: str = "",
    gate_uri: str = "",
    register_uri: str = "",
) -> str:
    """Advance the watermark as planned (compare-and-swap, while the run holds the lease) and
    store the run's outcome.json; returns the outcome's status."""
    from trainpipe.config import Config
    from trainpipe.continual.driver import finish_run
    from trainpipe.stages.entry import stage_entry

    outcome = stage_entry(finish_run)(
        Config.from_json(config_json),
        run_id,
        plan_uri,
        evaluate_uri=evaluate_uri,
        gate_uri=gate_uri,
        register_uri=register_uri,
    )
    print(f"[continual] {outcome.message}", flush=True)
    for reason in outcome.reasons:
        print(f"[continual]   {reason}", flush=True)
    return outcome.status
