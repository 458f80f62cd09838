"""The ``trainpipe submit`` and ``trainpipe schedule`` command lines (see ``trainpipe.kfp_api``
for what they do). ``add_config_args`` is the CLI's --config/--set, passed in by ``trainpipe.cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from trainpipe.cli_help import example_epilog
from trainpipe.cluster import cluster_unreadable_paths
from trainpipe.kfp_api import (
    DEFAULT_TOKEN_PATH,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    connect,
    default_run_name,
    resolve_auth,
    schedule,
    submit,
    to_kfp_cron,
    wait_for_run,
)

AddArgs = Callable[[argparse.ArgumentParser], None]


_S3_FIX = "the run will fail on the cluster; use an s3:// URI"


def warn_local_paths(problems: list[str], *, fix: str) -> None:
    """One stderr warning per config location that no cluster pod can read."""
    for problem in problems:
        print(
            f"warning: {problem} is a local path, which no cluster pod can read; {fix}",
            file=sys.stderr,
        )


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return lowered == "true"


def _add_common(parser: argparse.ArgumentParser, add_config_args: AddArgs) -> None:
    parser.add_argument(
        "--host",
        required=True,
        help="KFP API URL, e.g. http://ml-pipeline.kubeflow:8888 (required)",
    )
    add_config_args(parser)
    parser.add_argument(
        "--continual",
        action="store_true",
        help="the continual pipeline (new partitions, watermark, lease) instead of the batch one "
        "(default: off, the batch pipeline)",
    )
    parser.add_argument(
        "--experiment", help="KFP experiment to run in (default: the pipeline name)"
    )
    parser.add_argument(
        "--namespace",
        help="profile namespace, multi-user Kubeflow only (default: none, i.e. kubeflow)",
    )
    parser.add_argument(
        "--token", help=f"bearer token for the KFP API (default: ${TOKEN_ENV}, then a token file)"
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"ServiceAccount token file (default: ${TOKEN_PATH_ENV}, else {DEFAULT_TOKEN_PATH})",
    )


def add_submit_parser(subparsers, add_config_args: AddArgs) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "submit",
        help="compile the pipeline and start a run on a KFP cluster",
        description="Compile the pipeline from the config and create a KFP run. With --wait, "
        "exit 0 when it SUCCEEDED and 1 when it failed or did not finish within --timeout-s.",
        **example_epilog(
            "trainpipe submit --host http://ml-pipeline.kubeflow:8888 --config cluster.yaml --wait"
        ),
    )
    _add_common(parser, add_config_args)
    parser.add_argument("--run-name", help="display name (default: pipeline name + UTC time)")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to finish and exit with its outcome (default: off, return at once)",
    )
    parser.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=86400.0,
        help="with --wait: seconds to wait before giving up (default 86400, 24 h)",
    )
    parser.add_argument(
        "--poll-s",
        type=_positive_float,
        default=15.0,
        help="with --wait: seconds between status checks (default 15)",
    )
    parser.set_defaults(func=cmd_submit)
    return parser


def add_schedule_parser(subparsers, add_config_args: AddArgs) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "schedule",
        help="create a KFP recurring run of the pipeline",
        description="Create a KFP recurring run (one run at a time, no backfill by default). "
        "--cron takes standard 5-field cron (minute hour day month weekday, e.g. '0 3 * * *'), "
        "converted to KFP's 6-field form with seconds first ('0 0 3 * * *'); 6-field "
        "expressions and descriptors such as @daily or '@every 6h' are passed as they are. "
        "Times are in the KFP scheduler's time zone (usually UTC).",
        **example_epilog(
            "trainpipe schedule --host http://ml-pipeline.kubeflow:8888 --cron '0 3 * * *' "
            "--config cluster.yaml"
        ),
    )
    _add_common(parser, add_config_args)
    parser.add_argument(
        "--cron", required=True, metavar="EXPR", help="when to run, e.g. '0 3 * * *' (required)"
    )
    parser.add_argument(
        "--name",
        help="recurring run name (default: '<pipeline> retraining', with --continual "
        "'<pipeline> continual retraining')",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="N",
        help="runs allowed at once (default 1: a slow run delays the next one)",
    )
    parser.add_argument(
        "--catchup",
        type=_bool,
        default=False,
        metavar="true|false",
        help="after a pause, backfill every missed run (default false: only the latest)",
    )
    parser.set_defaults(func=cmd_schedule)
    return parser


def cmd_submit(args: argparse.Namespace) -> int:
    from trainpipe.config import load_config

    cfg = load_config(args.config, args.overrides)
    warn_local_paths(cluster_unreadable_paths(cfg, continual=args.continual), fix=_S3_FIX)
    auth = resolve_auth(args.token, args.token_file)
    client = connect(args.host, auth, args.namespace)
    host = args.host.rstrip("/")
    experiment = args.experiment or cfg.pipeline_name
    run_id = submit(
        cfg,
        client,
        host,
        experiment=experiment,
        run_name=args.run_name or default_run_name(cfg),
        namespace=args.namespace,
        continual=args.continual,
    )
    print(
        f"submitted run {run_id} to experiment {experiment!r} ({auth.describe()}): "
        f"{host}/#/runs/details/{run_id}",
        flush=True,
    )
    if args.wait:
        wait_for_run(client, host, run_id, timeout_s=args.timeout_s, poll_s=args.poll_s)
        print(f"run {run_id} SUCCEEDED")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from trainpipe.config import load_config

    cron, note = to_kfp_cron(args.cron)
    cfg = load_config(args.config, args.overrides)
    warn_local_paths(cluster_unreadable_paths(cfg, continual=args.continual), fix=_S3_FIX)
    auth = resolve_auth(args.token, args.token_file)
    client = connect(args.host, auth, args.namespace)
    host = args.host.rstrip("/")
    name = args.name or f"{cfg.pipeline_name} {'continual ' if args.continual else ''}retraining"
    experiment = args.experiment or cfg.pipeline_name
    if note:
        print(note)
    job = schedule(
        cfg,
        client,
        host,
        cron=cron,
        name=name,
        experiment=experiment,
        namespace=args.namespace,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
        continual=args.continual,
    )
    print(
        f"scheduled {name!r} ({job.recurring_run_id}) at {cron!r} in experiment {experiment!r}: "
        f"max concurrency {args.max_concurrency}, catch-up {str(args.catchup).lower()}"
    )
    return 0
