"""``trainpipe run --continual``: a schedule of arrivals on this machine, one run per arrival.

    trainpipe run --continual --output /tmp/cont --set pretrain.epochs=3 --set finetune.epochs=5

The built-in digits are shuffled and cut into an initial partition and later ones: clean data,
data with injected drift (inverted pixels), a corrupt partition (a truncated Parquet file) and
more clean data. Each arrival is written under ``<output>/incoming/`` and one continual run
(the continual DAG through kfp.local, :func:`trainpipe.continual.local.run_continual`)
consumes it; a last run finds nothing new.
The table at the end shows what each run decided.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainpipe.config import Config
from trainpipe.continual.driver import Outcome
from trainpipe.continual.local import run_continual
from trainpipe.data.config import BUILTIN_DIGITS
from trainpipe.data.datasets import read_source
from trainpipe.data.validation import array_field
from trainpipe.storage import open_store

# Shares of the shuffled digits: the initial set, then the later arrivals in order.
ARRIVALS = (
    ("part-0000", "initial", 0.45),
    ("part-0001", "clean", 0.15),
    ("part-0002", "drift", 0.15),
    ("part-0003", "corrupt", 0.10),
    ("part-0004", "clean", 0.15),
)


def digits_table(cfg: Config) -> pa.Table:
    return read_source(cfg.data.model_copy(update={"source": BUILTIN_DIGITS})).tables["all"]


def inverted(table: pa.Table) -> pa.Table:
    """Drift: the same digits with inverted intensities (white on black becomes black on white)."""
    pixels = table.column("pixels").combine_chunks()
    values = 1.0 - pixels.values.to_numpy(zero_copy_only=False)
    field, array = array_field("pixels", values.reshape(len(table), 1, 8, 8), [1, 8, 8])
    return table.set_column(0, field, array)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def arrival_files(cfg: Config, *, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """(partition name, kind, Parquet bytes) for every arrival, in order."""
    table = digits_table(cfg)
    order = np.random.default_rng(seed).permutation(len(table))
    bounds = np.cumsum([0] + [round(share * len(table)) for _, _, share in ARRIVALS])
    bounds[-1] = len(table)
    files = []
    for (name, kind, _), start, stop in zip(ARRIVALS, bounds[:-1], bounds[1:], strict=True):
        part = table.take(np.sort(order[start:stop]))
        if kind == "drift":
            part = inverted(part)
        data = parquet_bytes(part)
        if kind == "corrupt":
            data = data[: len(data) // 2]  # a truncated upload
        files.append((name, kind, data))
    return files


def simulate(cfg: Config, output: Path) -> list[tuple[str, str, Outcome]]:
    """Publish each arrival and run once per arrival, then once more with nothing new."""
    source = f"file://{(output / 'incoming').resolve()}"
    storage = cfg.storage.uri
    if storage == "trainpipe-runs" or "://" not in storage:
        storage = f"file://{(output / 'artifacts').resolve()}"
    # Every arrival comes labelled, so fine-tuning uses all labels; the scratch comparison is
    # the batch pipeline's evidence and would only double the training time here.
    cfg = cfg.model_copy(
        update={
            "continual": cfg.continual.model_copy(update={"source": source}),
            "storage": cfg.storage.model_copy(update={"uri": storage}),
            "finetune": cfg.finetune.model_copy(
                update={"label_fraction": 1.0, "compare_with_scratch": False}
            ),
        }
    )
    incoming = open_store(source, endpoint_url=cfg.storage.endpoint_url)
    kfp_root = output / "kfp-local"
    rows = []
    for name, kind, data in arrival_files(cfg, seed=cfg.continual.seed):
        incoming.put_bytes(f"{name}.parquet", data)
        print(f"[continual] {name}.parquet arrived ({kind}); running", flush=True)
        outcome = run_continual(cfg, kfp_root=kfp_root)
        print(f"[continual] {outcome.message}", flush=True)
        rows.append((f"{name}.parquet", kind, outcome))
    outcome = run_continual(cfg, kfp_root=kfp_root)
    print(f"[continual] {outcome.message}", flush=True)
    rows.append(("-", "no arrival", outcome))
    return rows


def _metric(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def format_table(rows: list[tuple[str, str, Outcome]]) -> str:
    header = (
        f"{'partition':<19}{'kind':<11}{'validation':<12}{'drift':>7}  {'mode':<13}"
        f"{'champion before':>16}{'after':>8}  result"
    )
    lines = [header, "-" * len(header)]
    for name, kind, outcome in rows:
        verdict = outcome.verdicts.get(name, "-").split(":")[0]
        drift = outcome.drift.get(name)
        result = outcome.status + (f" (v{outcome.version})" if outcome.version else "")
        lines.append(
            f"{name:<19}{kind:<11}{verdict:<12}{_metric(drift) if drift is not None else '-':>7}"
            f"  {outcome.mode or '-':<13}{_metric(outcome.champion_before):>16}"
            f"{_metric(outcome.champion_after):>8}  {result}"
        )
    lines.append("")
    lines.append("champion metric: accuracy on the fixed original test set")
    for name, _, outcome in rows:
        for reason in outcome.reasons:
            lines.append(f"  {name}: {reason}")
        for part, verdict in outcome.verdicts.items():
            if verdict != "passed":
                lines.append(f"  {part}: {verdict}")
    return "\n".join(lines)


def continual_command(cfg: Config, output: Path) -> int:
    """``trainpipe run --continual``: one scheduled run when continual.source is set, else the
    simulation. A run that finds the lease held or nothing new exits 0, saying so."""
    if cfg.continual.source is None:
        rows = simulate(cfg, output)
        print("\n" + format_table(rows))
        return 0
    outcome = run_continual(cfg)
    print(outcome.message)
    for reason in outcome.reasons:
        print(f"  {reason}")
    return 0
