"""A small training job for the distributed and resume tests.

    python -m tests.support.train_script OUT.pt [--store URI] [--every N] [--epochs N] [--model lm]
    python -m tests.support.train_script OUT.pt --shards DIR     # the same data, streamed
    torchrun --standalone --nproc_per_node=2 -m tests.support.train_script OUT.pt

Trains a classifier on seeded synthetic data (or, with ``--model lm``, a small masked language
model on seeded random tokens) with trainpipe's Trainer (world from torchrun's environment) and
saves the final weights from rank 0.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from trainpipe.data.datasets import Split
from trainpipe.data.shards import INDEX_NAME, discover_shards, write_shards
from trainpipe.data.streaming import StreamingConfig, StreamSplit
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.config import ModelConfig
from trainpipe.models.lm import LMConfig, TransformerLM
from trainpipe.storage import open_store
from trainpipe.train.checkpoint import CheckpointStore
from trainpipe.train.config import FinetuneConfig
from trainpipe.train.distributed import init_from_env, shutdown
from trainpipe.train.lm_objectives import MaskedLM
from trainpipe.train.objectives import Classification
from trainpipe.train.trainer import Trainer


def blobs(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8)).astype(np.float32) + y[:, None].astype(np.float32)
    return Split(x, y.astype(np.int64))


def streamed(split: Split, uri: str) -> StreamSplit:
    """``split`` written as Parquet shards (once) and read back as a stream with 2 workers."""
    import pyarrow as pa

    if not open_store(uri).exists(INDEX_NAME):
        columns = {f"x{i}": split.x[:, i] for i in range(split.x.shape[1])}
        write_shards(
            pa.table({**columns, "y": split.y}), uri, rows_per_shard=100, row_group_rows=25
        )
    shards = discover_shards(uri).shards
    features = [f"x{i}" for i in range(split.x.shape[1])]
    streaming = StreamingConfig(shuffle_block_rows=128, loader_workers=2)
    return StreamSplit(uri, shards, "y", features, [len(features)], [0, 1, 2], streaming)


def tokens(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(5, 64, (n, 17)), np.zeros(n, dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--store")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--parallelism", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--shards", help="stream the data from Parquet shards written here")
    parser.add_argument("--model", default="mlp", choices=["mlp", "lm"])
    args = parser.parse_args()
    cfg = FinetuneConfig(
        epochs=args.epochs,
        batch_size=32,
        lr=5e-3,
        device="cpu",
        grad_accumulation_steps=args.accumulate,
        parallelism=args.parallelism,
        checkpoint_every_steps=args.every if args.store else None,
    )
    world = init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    if args.model == "lm":
        lm_cfg = LMConfig(kind="masked", dim=32, depth=1, heads=2, dropout=args.dropout)
        model = TransformerLM(lm_cfg, 64)
        objective = MaskedLM(0.15, mask_id=3, vocab_size=64, special_ids=[0, 1, 2, 3, 4])
        train, validation = tokens(640, 0), tokens(64, 1)
    else:
        model_cfg = ModelConfig(name="mlp", hidden_dim=64, embed_dim=32, dropout=args.dropout)
        model = Classifier(build_encoder(model_cfg, [8]), 3)
        objective = Classification()
        train, validation = blobs(640, 0), blobs(128, 1)
    checkpoints = None
    if args.store:
        checkpoints = CheckpointStore(open_store(args.store), "run", "train", keep=2)
    trainer = Trainer(cfg, model, objective, stage="train", world=world, checkpoints=checkpoints)
    if args.shards:
        train, validation = (
            streamed(train, f"{args.shards}/train"),
            streamed(validation, f"{args.shards}/val"),
        )
    trainer.fit(train, validation)
    state = trainer.full_state_dict()
    if world.is_main:
        torch.save(state, args.out)
    shutdown()


if __name__ == "__main__":
    main()
