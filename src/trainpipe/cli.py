"""The ``trainpipe`` command.

    trainpipe run [--config FILE] [--set key=value ...] [--output DIR]
    trainpipe tune [--config FILE] [--set key=value ...] [--output DIR]
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
from trainpipe.cli_kfp import add_schedule_parser, add_submit_parser
from trainpipe.errors import ConfigError, TrainpipeError

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
    if args.continual:
        from trainpipe.continual.simulate import continual_command

        return continual_command(cfg, output)
    summary = run_locally(cfg, kfp_root=output / "kfp-local")
    print("\n" + format_summary(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """validate_data -> pretrain -> tune through kfp.local; prints the best parameters."""
    from trainpipe.local_run import format_summary, run_locally

    args.overrides = [
        *([f"storage.uri={args.output}"] if args.output else []),
        "tune.enabled=true",
        *args.overrides,
    ]
    cfg = _load(args)
    summary = run_locally(
        cfg, kfp_root=Path(args.output or "trainpipe-runs") / "kfp-local", tune_only=True
    )
    print("\n" + format_summary(summary))
    tuned = summary.stage("tune")
    params = " ".join(f"--set {k}={v}" for k, v in tuned.summary["params"].items())
    print(f"report: {tuned.uri}/report.html\ntrain with them: trainpipe run {params}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from trainpipe.pipelines.training import compile_pipeline

    cfg = _load(args)
    compile_pipeline(cfg, args.output, continual=args.continual)
    name = f"{cfg.pipeline_name}-continual" if args.continual else cfg.pipeline_name
    print(f"wrote {args.output} (pipeline {name!r}, image {cfg.cluster.image})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.server import serve

    serve(args.model, ServeConfig(host=args.host, port=args.port, endpoint_url=args.endpoint_url))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    """list | show [VERSION] [--json] | promote VERSION [--force] | rollback."""
    from trainpipe.registry import Registry, RegistryError
    from trainpipe.storage import open_store

    cfg = _load(args)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    registry = Registry(store, args.model or cfg.registry.model_name)
    name = registry.model_name
    if args.action == "list":
        try:
            champion = registry.champion()
        except RegistryError as exc:  # still list the versions a repair can choose from
            champion, broken = None, exc
        else:
            broken = None
        versions = registry.versions()
        if not versions:
            print(f"no versions of {name} under {registry.uri}")
        else:
            print(f"  {'version':>7}  {'created (UTC)':<19}  accuracy  macro-F1  log loss  run")
        for version in versions:
            print(_version_line(registry.open_version(version), champion, version))
        if broken is not None:
            raise broken
    elif args.action == "show":
        champion = registry.champion()
        version = args.version or (champion.version if champion else None)
        if version is None:
            raise RegistryError(
                f"registry error: {name} has no champion yet; name a version "
                f"(versions: {', '.join(registry.versions()) or 'none'})"
            )
        details = _version_details(registry, version, champion)
        print(json.dumps(details, indent=2) if args.json else _format_details(details))
    elif args.action == "promote":
        if not args.version:
            raise ConfigError("usage error: registry promote needs a VERSION, e.g. `promote 3`")
        before = None if args.force else registry.champion()
        promoted = registry.promote(
            args.version, reason=args.reason or "manual promotion", force=args.force
        )
        was = promoted.previous_version if args.force else (before.version if before else None)
        print(f"champion of {name}: {_v(was)} -> version {promoted.version}")
    elif args.action == "rollback":
        restored = registry.rollback()
        print(
            f"champion of {name}: version {restored.previous_version} -> "
            f"version {restored.version} (rolled back)"
        )
    return 0


def _v(version: str | None) -> str:
    return f"version {version}" if version else "none"


def _created(manifest: dict) -> str:
    return manifest.get("finished_at", "")[:19].replace("T", " ")


def _version_line(version_set, champion, version: str) -> str:
    summary = version_set.summary
    marker = "*" if champion and champion.version == version else " "
    cells = [
        f"{summary[k]:8.4f}" if isinstance(summary.get(k), (int, float)) else f"{'-':>8}"
        for k in ("accuracy", "macro_f1", "log_loss")
    ]
    run = version_set.manifest.get("run_id", "")
    return f"{marker} {version:>7}  {_created(version_set.manifest):<19}  {'  '.join(cells)}  {run}"


def _version_details(registry, version: str, champion) -> dict:
    version_set = registry.open_version(version)
    manifest = version_set.manifest
    names = version_set.names()
    return {
        "model": registry.model_name,
        "version": version,
        "champion": bool(champion and champion.version == version),
        "uri": version_set.uri,
        "created": manifest.get("finished_at"),
        "run_id": manifest.get("run_id"),
        "summary": manifest.get("summary", {}),
        "lineage": (
            version_set.get_json("lineage.json")
            if "lineage.json" in names
            else manifest.get("lineage", {})
        ),
        "gate": version_set.get_json("decision.json") if "decision.json" in names else None,
        "files": {n: manifest["files"][n]["size_bytes"] for n in names},
    }


def _format_details(d: dict) -> str:
    summary = d["summary"]
    metrics = "  ".join(
        f"{label} {summary[k]:.4f}"
        for k, label in (
            ("accuracy", "accuracy"),
            ("macro_f1", "macro-F1"),
            ("log_loss", "log loss"),
            ("ece", "ECE"),
        )
        if isinstance(summary.get(k), (int, float))
    )
    lines = [
        f"{d['model']} version {d['version']}" + ("  (champion)" if d["champion"] else ""),
        f"  uri        {d['uri']}",
        f"  created    {d['created']}",
        f"  run        {d['run_id']}",
        f"  metrics    {metrics or '-'}"
        + (f"  on {summary['num_examples']} test examples" if "num_examples" in summary else ""),
    ]
    lineage = d["lineage"]
    if lineage.get("data_source"):
        stored = f"  (validated: {lineage['data']})" if lineage.get("data") else ""
        lines.append(f"  data       {lineage['data_source']}{stored}")
    if lineage.get("pretrain"):
        lines.append(f"  pretrain   {lineage['pretrain']}")
    if lineage.get("code_version") or lineage.get("git_sha"):
        code = f"trainpipe {lineage.get('code_version') or '?'}"
        lines.append(f"  code       {code}, git {lineage.get('git_sha') or 'unknown'}")
    if d["gate"]:
        lines.append(f"  gate       {d['gate']['decision']}")
        for rule in d["gate"]["rules"]:
            lines.append(f"    {'pass' if rule['passed'] else 'FAIL'} {rule['detail']}")
    sizes = ", ".join(f"{n} ({size:,} B)" for n, size in d["files"].items())
    lines.append(f"  files      {sizes}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"trainpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole DAG locally through kfp.local")
    _add_config_args(run)
    run.add_argument("--output", metavar="DIR", help="artifact root (default ./trainpipe-runs)")
    run.add_argument(
        "--continual",
        action="store_true",
        help="one scheduled continual run on continual.source, or (unset) simulate arrivals",
    )
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser(
        "tune", help="search fine-tuning hyperparameters (validate, pretrain, tune) locally"
    )
    _add_config_args(tune)
    tune.add_argument("--output", metavar="DIR", help="artifact root (default ./trainpipe-runs)")
    tune.set_defaults(func=cmd_tune)

    comp = sub.add_parser("compile", help="write the KFP IR YAML for a cluster")
    _add_config_args(comp)
    comp.add_argument("--output", required=True, metavar="FILE")
    comp.add_argument(
        "--continual",
        action="store_true",
        help="the continual pipeline (new partitions, watermark, lease) instead of the batch one",
    )
    comp.set_defaults(func=cmd_compile)

    # Listed for `trainpipe --help` only: main() hands `validate ...` to the validator's own
    # parser before this one runs.
    sub.add_parser("validate", help="validate a dataset (exit 0 clean, 1 anomalies)")

    serve = sub.add_parser("serve", help="serve a model with the OIP v2 REST protocol")
    serve.add_argument("--model", required=True, metavar="URI")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for s3:// models (MinIO, Ceph, ...); default AWS_ENDPOINT_URL or AWS",
    )
    serve.set_defaults(func=cmd_serve)

    reg = sub.add_parser("registry", help="list, show, promote or roll back model versions")
    reg.add_argument("action", choices=["list", "show", "promote", "rollback"])
    reg.add_argument("version", nargs="?", help="show: default the champion; promote: required")
    reg.add_argument("--model", help="model name (default: registry.model_name)")
    reg.add_argument("--json", action="store_true", help="show: print JSON instead of text")
    reg.add_argument("--reason", help="promote: why, recorded in the promotion history")
    reg.add_argument(
        "--force",
        action="store_true",
        help="promote: overwrite the champion pointer without compare-and-swap (repairs a "
        "corrupt pointer)",
    )
    _add_config_args(reg)
    reg.set_defaults(func=cmd_registry)

    add_submit_parser(sub, _add_config_args)
    add_schedule_parser(sub, _add_config_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        # The validator owns its whole command line (its --help included).
        from trainpipe.data.validation.cli import main as validate_main

        return validate_main(argv[1:])
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
