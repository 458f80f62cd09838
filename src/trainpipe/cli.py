"""The ``trainpipe`` command.

    trainpipe run [--config FILE] [--set key=value ...] [--output DIR]
    trainpipe compile --output pipeline.yaml [--config FILE] [--set key=value ...]
    trainpipe validate DATA [--schema FILE] [--reference DATA] [--report FILE]
    trainpipe serve --model URI [--host H] [--port P]
    trainpipe registry list|show|promote|rollback ...
    trainpipe submit --host URL [--wait] ... / trainpipe schedule --host URL --cron EXPR ...

A user-fixable error ends with one ``error:`` line and exit status 1 (2 for usage and config
errors); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainpipe import __version__
from trainpipe.errors import ConfigError, TrainpipeError
from trainpipe.kfp_api import add_schedule_parser, add_submit_parser

EXIT_ERROR = 1
EXIT_USAGE = 2


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (defaults run the demo)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set finetune.lr=3e-4 (repeatable)",
    )


def _load(args: argparse.Namespace):
    from trainpipe.config import load_config

    return load_config(args.config, args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from trainpipe.local_run import format_summary, run_locally

    overrides = list(args.overrides)
    if args.output and not any(o.startswith("storage.uri=") for o in overrides):
        overrides.insert(0, f"storage.uri={args.output}")
    args.overrides = overrides
    cfg = _load(args)
    output = Path(args.output or "trainpipe-runs")
    summary = run_locally(cfg, kfp_root=output / "kfp-local")
    print("\n" + format_summary(summary))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from trainpipe.pipelines.training import compile_pipeline

    cfg = _load(args)
    compile_pipeline(cfg, args.output)
    print(f"wrote {args.output} (pipeline {cfg.pipeline_name!r}, image {cfg.cluster.image})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from trainpipe.data.validation.cli import main as validate_main

    return validate_main(args.validate_args)


def cmd_serve(args: argparse.Namespace) -> int:
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.server import serve

    serve(args.model, ServeConfig(host=args.host, port=args.port))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from trainpipe.registry import Registry
    from trainpipe.storage import open_store

    cfg = _load(args)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    registry = Registry(store, args.model or cfg.registry.model_name)
    champion = registry.champion()
    if args.action == "list":
        for version in registry.versions():
            marker = "*" if champion and champion.version == version else " "
            summary = registry.open_version(version).summary
            metrics = "  ".join(
                f"{k} {summary[k]:.4f}" for k in ("accuracy", "macro_f1") if k in summary
            )
            print(f"{marker} {version:>4}  {metrics}")
        if not registry.versions():
            print(f"no versions of {registry.model_name} under {registry.uri}")
    elif args.action == "show":
        version = args.version or (champion.version if champion else None)
        if version is None:
            raise TrainpipeError(f"{registry.model_name} has no champion; name a version")
        print(json.dumps(registry.open_version(version).manifest, indent=2))
    elif args.action == "promote":
        if not args.version:
            raise ConfigError("registry promote needs a VERSION")
        promoted = registry.promote(args.version, reason="manual promotion")
        print(f"champion of {registry.model_name}: version {promoted.version}")
    elif args.action == "rollback":
        restored = registry.rollback()
        print(f"champion of {registry.model_name}: version {restored.version} (rolled back)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"trainpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole DAG locally through kfp.local")
    _add_config_args(run)
    run.add_argument("--output", metavar="DIR", help="artifact root (default ./trainpipe-runs)")
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="write the KFP IR YAML for a cluster")
    _add_config_args(comp)
    comp.add_argument("--output", required=True, metavar="FILE")
    comp.set_defaults(func=cmd_compile)

    val = sub.add_parser(
        "validate", help="validate a dataset (exit 0 clean, 1 anomalies)", add_help=False
    )
    val.add_argument("validate_args", nargs=argparse.REMAINDER)
    val.set_defaults(func=cmd_validate)

    serve = sub.add_parser("serve", help="serve a model with the OIP v2 REST protocol")
    serve.add_argument("--model", required=True, metavar="URI")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)

    reg = sub.add_parser("registry", help="list, show, promote or roll back model versions")
    reg.add_argument("action", choices=["list", "show", "promote", "rollback"])
    reg.add_argument("version", nargs="?")
    reg.add_argument("--model", help="model name (default: registry.model_name)")
    _add_config_args(reg)
    reg.set_defaults(func=cmd_registry)

    add_submit_parser(sub)
    add_schedule_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainpipeError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
