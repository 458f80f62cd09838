"""One training process under torchrun; every rank runs this, rank 0 writes the artifacts.

torchrun --standalone --nproc_per_node=2 -m trainpipe.train.worker pretrain '{"run_id": ...}'
"""

from __future__ import annotations

import json
import sys

from trainpipe.errors import TrainpipeError
from trainpipe.train.distributed import shutdown


def main(argv: list[str]) -> int:
    stage, args = argv[0], json.loads(argv[1])
    from trainpipe.stages import finetune, pretrain

    train = {"pretrain": pretrain.train_pretrain, "finetune": finetune.train_finetune}[stage]
    try:
        train(**args)
    except TrainpipeError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
