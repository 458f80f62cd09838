from kfp import dsl

from trainpipe.cluster import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def continual_release(config_json: str, run_id: str, job_id: str):
    """The continual DAG's exit handler: release the lease if this run still holds it, after
    success and failure alike (a lease another run holds is left alone)."""
    from trainpipe.config import Config
    from trainpipe.continual.driver import release_run
    from trainpipe.stages.entry import stage_entry

    resolved = run_id or job_id
    released = stage_entry(release_run)(Config.from_json(config_json), resolved)
    print(f"[continual] lease {'released' if released else 'not held by'} run {resolved}")
