"""The one entry point of every training process: torchrun workers and TrainJob pods.

    torchrun --module trainpipe.stages.pod <stage> --run-id ID --input data_uri=s3://...

reads the config from $TRAINPIPE_CONFIG_JSON and runs the stage's training function in this
process: every rank trains (DDP), rank 0 commits the stage's artifacts. The pretrain and
finetune stages (and the language-model DAG's lm_pretrain and lm_finetune) start it under
torchrun in their own pod when ``nproc_per_node`` > 1 (``stages.training_run``), and a
TrainJob's pods run it on every node when ``cluster.num_nodes`` > 1 (``train.trainjob``). The
config it reads must have ``cluster.num_nodes=1``, so the pods train instead of launching
another TrainJob.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from trainpipe.errors import TrainpipeError
from trainpipe.train.distributed import shutdown
from trainpipe.train.trainjob import CONFIG_ENV

MODULE = "trainpipe.stages.pod"


def trainers() -> dict:
    """Stage name -> its training function ``train(config_json=, run_id=, **inputs)``."""
    from trainpipe.stages.finetune import train_finetune
    from trainpipe.stages.lm_finetune import train_lm_finetune
    from trainpipe.stages.lm_pretrain import train_lm_pretrain
    from trainpipe.stages.pretrain import train_pretrain

    return {
        "pretrain": train_pretrain,
        "finetune": train_finetune,
        "lm_pretrain": train_lm_pretrain,
        "lm_finetune": train_lm_finetune,
    }


def command(stage: str, run_id: str, inputs: dict[str, str]) -> list[str]:
    """The arguments after ``torchrun ... --module trainpipe.stages.pod``."""
    args = [stage, "--run-id", run_id]
    for key, value in inputs.items():
        args += ["--input", f"{key}={value}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("stage", choices=sorted(trainers()))
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--input", action="append", default=[], metavar="KEY=URI")
    args = parser.parse_args(argv)
    inputs = dict(item.split("=", 1) for item in args.input)
    config_json = os.environ.get(CONFIG_ENV)
    if not config_json:
        print(
            f"trainpipe: ${CONFIG_ENV} is not set; this entry point runs under torchrun or "
            "inside a TrainJob",
            file=sys.stderr,
        )
        return 2
    if json.loads(config_json)["cluster"]["num_nodes"] != 1:
        print("trainpipe: the training pod's config must have cluster.num_nodes=1", file=sys.stderr)
        return 2
    try:
        trainers()[args.stage](config_json=config_json, run_id=args.run_id, **inputs)
    except TrainpipeError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[{args.stage}] committed runs/{args.run_id}/{args.stage}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
