"""The ``trainpipe`` command.

    trainpipe run [--config FILE] [--set key=value ...] [--output DIR]
    trainpipe tune [--config FILE] [--set key=value ...] [--output DIR]
    trainpipe compile --output pipeline.yaml [--config FILE] [--set key=value ...] [--continual]
                      [--strict]
    trainpipe validate DATA [--schema FILE] [--reference DATA] [--report FILE]
    trainpipe serve [--model PATH|URI] [--output DIR] [--host H] [--port P]
    trainpipe registry list|show|promote|rollback [--output DIR] ...
    trainpipe submit --host URL [--wait] ... / trainpipe schedule --host URL --cron EXPR ...

A user-fixable error ends with one ``trainpipe:`` line and exit status 1 (2 for usage and config
errors); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainpipe import __version__
from trainpipe.cli_help import example_epilog
from trainpipe.cli_kfp import add_schedule_parser, add_submit_parser, warn_local_paths
from trainpipe.cluster import cluster_unreadable_paths
from trainpipe.errors import ConfigError, TrainpipeError

EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_STORE = "trainpipe-runs"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (default: none, the built-in defaults: the digits demo on CPU)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set finetune.lr=3e-4 (repeatable; applied "
        "after --config; default: none)",
    )


def add_storage_arg(parser: argparse.ArgumentParser) -> None:
    """``--output DIR``: the artifact store, the same option for run, registry and serve."""
    parser.add_argument(
        "--output",
        dest="store",
        metavar="DIR",
        help="artifact store: a folder or s3://bucket/prefix; the same as --set "
        f"storage.uri=DIR (default: storage.uri from the config, ./{DEFAULT_STORE})",
    )


def _command(sub, name: str, *, help: str, description: str, example: str):
    """A subcommand whose help shows its description and one example."""
    return sub.add_parser(name, help=help, description=description, **example_epilog(example))


def _load(args: argparse.Namespace):
    from trainpipe.config import load_config

    overrides = list(args.overrides)
    output = getattr(args, "store", None)
    if output and not any(o.startswith("storage.uri=") for o in overrides):
        overrides.insert(0, f"storage.uri={output}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from trainpipe.local_run import format_summary, run_locally

    cfg = _load(args)
    if args.continual and cfg.language_model.enabled:
        raise ConfigError(
            "usage error: --continual retrains table/image models; the language-model DAG has "
            "no continual run (drop --continual or language_model.enabled)"
        )
    if args.continual:
        from trainpipe.continual.simulate import continual_command

        return continual_command(cfg, Path(args.store or DEFAULT_STORE))
    summary = run_locally(cfg)
    print("\n" + format_summary(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """validate_data -> pretrain -> tune through kfp.local; prints the best parameters."""
    from trainpipe.local_run import format_summary, run_locally

    args.overrides = ["tune.enabled=true", *args.overrides]
    cfg = _load(args)
    summary = run_locally(cfg, tune_only=True)
    print("\n" + format_summary(summary))
    tuned = summary.stage("tune")
    # null (an automatic value such as finetune.batch_size) is what --set reads back as None.
    params = " ".join(
        f"--set {k}={'null' if v is None else v}" for k, v in tuned.summary["params"].items()
    )
    print(f"report: {tuned.uri}/report.html\ntrain with them: trainpipe run {params}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from trainpipe.pipelines.training import compile_pipeline

    cfg = _load(args)
    local = cluster_unreadable_paths(cfg, continual=args.continual)
    if local and args.strict:
        raise ConfigError(
            f"usage error: {' and '.join(local)} is a local path, which no cluster pod can "
            "read; use s3:// URIs (or drop --strict to compile anyway)"
        )
    compile_pipeline(cfg, args.output, continual=args.continual)
    name = f"{cfg.pipeline_name}-continual" if args.continual else cfg.pipeline_name
    print(f"wrote {args.output} (pipeline {name!r}, image {cfg.cluster.image})")
    warn_local_paths(local, fix="set an s3:// URI before submitting (--strict refuses)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.server import serve
    from trainpipe.storage import join_uri

    model, endpoint_url = args.model, args.endpoint_url
    if model is None:
        # Only without --model: the full config imports torch, which the serving image lacks.
        cfg = _load(args)
        model = join_uri(cfg.storage.uri, "registry", cfg.registry.model_name)
        endpoint_url = endpoint_url or cfg.storage.endpoint_url
    serve(model, ServeConfig(host=args.host, port=args.port, endpoint_url=endpoint_url))
    return 0


CHAMPION_LEGEND = (
    "* marks the champion: the version `trainpipe serve` and the deploy stage use "
    "(change it with `trainpipe registry promote VERSION` or `rollback`)"
)


def cmd_registry(args: argparse.Namespace) -> int:
    """list [--model NAME] | show [VERSION] [--json] | promote VERSION [--force] | rollback."""
    from trainpipe.registry import Registry, RegistryError, model_names
    from trainpipe.storage import open_store

    cfg = _load(args)
    store = open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    if args.action == "list":
        names = [args.model] if args.model else model_names(store)
        if not names:
            print(
                f"no models under {store.uri_for('registry')}; a `trainpipe run --output DIR` "
                "that passes the gate registers one (pass the same --output here)"
            )
            return 0
        failures = [_list_model(Registry(store, name), titled=not args.model) for name in names]
        print(CHAMPION_LEGEND)
        broken = next((f for f in failures if f is not None), None)
        if broken is not None:
            raise broken
        return 0
    registry = Registry(store, args.model or cfg.registry.model_name)
    name = registry.model_name
    if args.action == "show":
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


def _list_model(registry, *, titled: bool):
    """Print one model's versions; returns the RegistryError of a corrupt pointer (the versions
    are still listed, so a repair can choose one)."""
    from trainpipe.registry import RegistryError

    try:
        champion, broken = registry.champion(), None
    except RegistryError as exc:
        champion, broken = None, exc
    versions = registry.versions()
    if titled:
        print(f"{registry.model_name}  ({registry.uri})")
    if not versions:
        print(f"no versions of {registry.model_name} under {registry.uri}")
        return broken
    print(f"  {'version':>7}  {'created (UTC)':<19}  accuracy  macro-F1  log loss  run")
    for version in versions:
        print(_version_line(registry.open_version(version), champion, version))
    return broken


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
    parser = argparse.ArgumentParser(
        prog="trainpipe",
        description="Train, evaluate, register and serve a model with one Kubeflow Pipelines "
        "DAG: locally (trainpipe run) or on a cluster (compile, submit, schedule).",
        **example_epilog(
            "trainpipe run --output runs  &&  trainpipe registry list --output runs",
            "`trainpipe COMMAND --help` describes each command's options.",
        ),
    )
    parser.add_argument("--version", action="version", version=f"trainpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        sub,
        "run",
        help="run the whole DAG locally through kfp.local",
        description="Run every stage on this machine through kfp.local (no cluster needed). "
        "The console shows progress, stage lines and a summary; the full log is saved as "
        "runs/RUN_ID/run.log in the artifact store.",
        example="trainpipe run --output runs --set finetune.epochs=20",
    )
    _add_config_args(run)
    add_storage_arg(run)
    run.add_argument(
        "--continual",
        action="store_true",
        help="one scheduled continual run on continual.source, or (unset) simulate arrivals "
        "(default: off, one ordinary run)",
    )
    run.set_defaults(func=cmd_run)

    tune = _command(
        sub,
        "tune",
        help="search fine-tuning hyperparameters (validate, pretrain, tune) locally",
        description="Run validate_data, pretrain and the hyperparameter search (tune) through "
        "kfp.local and print the best parameters as --set options for `trainpipe run`.",
        example="trainpipe tune --output runs --set tune.trials=12",
    )
    _add_config_args(tune)
    add_storage_arg(tune)
    tune.set_defaults(func=cmd_tune)

    comp = _command(
        sub,
        "compile",
        help="write the KFP IR YAML for a cluster",
        description="Compile the pipeline for Kubeflow Pipelines. Warns when data.source or "
        "storage.uri is a local path, which no cluster pod can read.",
        example="trainpipe compile --output pipeline.yaml --config cluster.yaml --strict",
    )
    _add_config_args(comp)
    comp.add_argument(
        "--output", required=True, metavar="FILE", help="where to write the IR YAML (required)"
    )
    comp.add_argument(
        "--continual",
        action="store_true",
        help="the continual pipeline (new partitions, watermark, lease) instead of the batch one "
        "(default: off, the batch pipeline)",
    )
    comp.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) instead of warning when data or storage is a local path "
        "(default: off, warn)",
    )
    comp.set_defaults(func=cmd_compile)

    # Listed for `trainpipe --help` only: main() hands `validate ...` to the validator's own
    # parser before this one runs.
    sub.add_parser("validate", help="validate a dataset (exit 0 clean, 1 anomalies)")

    serve = _command(
        sub,
        "serve",
        help="serve a model with the OIP v2 REST protocol",
        description="Serve a model over the Open Inference Protocol v2. --model is a single "
        ".onnx file (with its model.json beside it when present), a model package folder (a "
        "registry version or an export_onnx output), or a registry model folder (the one "
        "holding champion.json; the server follows the champion). Without --model, the "
        "champion of registry.model_name in the artifact store is served.",
        example="trainpipe serve --output runs --port 8080",
    )
    serve.add_argument(
        "--model",
        metavar="PATH|URI",
        help="what to serve: model.onnx, a version folder or a registry model folder, as a "
        "path, file:// or s3:// URI (default: the registry model in the artifact store)",
    )
    add_storage_arg(serve)
    _add_config_args(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to listen on; 0 picks a free one (default 8080)",
    )
    serve.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for s3:// models (MinIO, Ceph, ...); default: AWS_ENDPOINT_URL, then "
        "AWS (without --model, storage.endpoint_url comes first)",
    )
    serve.set_defaults(func=cmd_serve)

    reg = _command(
        sub,
        "registry",
        help="list, show, promote or roll back model versions",
        description="Inspect and change the model registry in the artifact store.",
        example="trainpipe registry list --output runs",
    )
    actions = reg.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text, description, example in (
        (
            "list",
            "list the versions of every model (or of --model)",
            "List each model's versions with their test metrics; * marks the champion.",
            "trainpipe registry list --output runs",
        ),
        (
            "show",
            "show one version: metrics, lineage, gate decision, files",
            "Show one version (default: the champion) with its metrics, lineage, gate "
            "decision and files.",
            "trainpipe registry show 2 --output runs --json",
        ),
        (
            "promote",
            "make a version the champion",
            "Make VERSION the champion (compare-and-swap on champion.json).",
            "trainpipe registry promote 2 --output runs --reason 'better on slices'",
        ),
        (
            "rollback",
            "make the previous champion the champion again",
            "Make the previous champion the champion again.",
            "trainpipe registry rollback --output runs",
        ),
    ):
        cmd = _command(actions, action, help=help_text, description=description, example=example)
        if action == "show":
            cmd.add_argument("version", nargs="?", help="version number (default: the champion)")
            cmd.add_argument(
                "--json", action="store_true", help="print JSON instead of text (default: text)"
            )
        if action == "promote":
            cmd.add_argument("version", nargs="?", help="version number to promote (required)")
            cmd.add_argument(
                "--reason",
                help="why, recorded in the promotion history (default: 'manual promotion')",
            )
            cmd.add_argument(
                "--force",
                action="store_true",
                help="overwrite the champion pointer without compare-and-swap; repairs a "
                "corrupt pointer (default: off)",
            )
        cmd.add_argument(
            "--model",
            metavar="NAME",
            help="model name (default: "
            + ("every model in the store)" if action == "list" else "registry.model_name)"),
        )
        add_storage_arg(cmd)
        _add_config_args(cmd)
        cmd.set_defaults(func=cmd_registry)

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
