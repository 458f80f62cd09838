"""Data validation throughput: trainpipe (Arrow) against pandera (pandas), same checks, one process.

    python -m benchmarks.validation            # 1,000,000 rows x 20 columns
    python -m benchmarks.validation --quick    # 200,000 rows, a few seconds

Data: 8 float columns (2% missing), 6 int columns, 6 string category columns. Checks, the same on
both sides: column present with the right type; floats within [-10, 10] with at most 5% missing;
ints within [0, 1000] and never missing; strings among the allowed categories and never missing.
Each side gets its native in-memory form (an Arrow table; a pandas DataFrame converted before
timing) and validates it lazily (all failures collected). Timing: the best of ``--repeats`` runs.

Full-row duplicate detection is timed separately (pandera ``unique=[all columns]`` vs trainpipe's
row hashes) because it is a different kind of work (hashing every byte) from the column checks.

Before timing, both validators run on a copy with planted faults and must flag the same columns.
The last line is one JSON object: rows_per_s for each side and ``ratio`` (trainpipe / pandera).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from trainpipe.data.validation import (
    CategoricalColumn,
    NumericColumn,
    Schema,
    check_table,
)
from trainpipe.data.validation.hashing import duplicate_count, row_hashes

N_FLOAT, N_INT, N_STRING = 8, 6, 6
CATEGORIES = [f"cat_{i:02d}" for i in range(12)]
FLOAT_RANGE, INT_RANGE = (-10.0, 10.0), (0, 1000)
MISSING_FRACTION, MAX_MISSING = 0.02, 0.05


def make_table(n_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    for i in range(N_FLOAT):
        values = rng.normal(0, 1.5, n_rows)  # |x| > 10 is 6.7 sigma: never in 8M draws
        columns[f"f{i}"] = pa.array(values, mask=rng.random(n_rows) < MISSING_FRACTION)
    for i in range(N_INT):
        columns[f"i{i}"] = pa.array(rng.integers(*INT_RANGE, n_rows, endpoint=True))
    dictionary = pa.array(CATEGORIES)
    for i in range(N_STRING):
        codes = rng.integers(0, len(CATEGORIES) - 2, n_rows).astype(np.int32)
        columns[f"s{i}"] = dictionary.take(pa.array(codes))  # plain strings, not dictionary
    return pa.table(columns)


def plant_faults(table: pa.Table) -> tuple[pa.Table, set[str]]:
    """One out-of-range float, one out-of-range int, one unseen category, one too-missing column."""
    n = table.num_rows
    f0 = table.column("f0").to_numpy(zero_copy_only=False).copy()
    f0[n // 2] = 1e6
    i0 = table.column("i0").to_numpy().copy()
    i0[7] = -5
    s0 = table.column("s0").to_pylist()
    s0[3] = "unexpected"
    f1 = table.column("f1").to_numpy(zero_copy_only=False).copy()
    mask = np.isnan(f1) | (np.arange(n) < n // 10)
    table = table.set_column(0, "f0", pa.array(f0, mask=np.isnan(f0)))
    table = table.set_column(1, "f1", pa.array(f1, mask=mask))
    table = table.set_column(N_FLOAT, "i0", pa.array(i0))
    table = table.set_column(N_FLOAT + N_INT, "s0", pa.array(s0))
    return table, {"f0", "f1", "i0", "s0"}


def trainpipe_schema() -> Schema:
    columns: list = []
    for i in range(N_FLOAT):
        columns.append(
            NumericColumn(
                name=f"f{i}",
                dtype="float",
                min=FLOAT_RANGE[0],
                max=FLOAT_RANGE[1],
                max_missing_fraction=MAX_MISSING,
            )
        )
    for i in range(N_INT):
        columns.append(NumericColumn(name=f"i{i}", dtype="int", min=INT_RANGE[0], max=INT_RANGE[1]))
    for i in range(N_STRING):
        columns.append(CategoricalColumn(name=f"s{i}", dtype="string", values=CATEGORIES))
    return Schema(columns=columns)


def pandera_schema():
    import pandera.pandas as pandera

    def missing_at_most(limit: float):
        return pandera.Check(
            lambda s: s.isna().mean() <= limit, ignore_na=False, name=f"missing<={limit}"
        )

    columns = {}
    for i in range(N_FLOAT):
        columns[f"f{i}"] = pandera.Column(
            float,
            checks=[pandera.Check.in_range(*FLOAT_RANGE), missing_at_most(MAX_MISSING)],
            nullable=True,
        )
    for i in range(N_INT):
        columns[f"i{i}"] = pandera.Column(int, pandera.Check.in_range(*INT_RANGE))
    for i in range(N_STRING):
        columns[f"s{i}"] = pandera.Column(str, pandera.Check.isin(CATEGORIES))
    return pandera.DataFrameSchema(columns, strict=True)


def pandera_failures(schema, frame) -> set[str]:
    import pandera.errors

    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return {str(c) for c in exc.failure_cases["column"].dropna().unique()}
    return set()


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, fewer repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    n_rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    warnings.filterwarnings("ignore")

    table = make_table(n_rows)
    frame = table.to_pandas()
    ours, theirs = trainpipe_schema(), pandera_schema()

    faulty, planted = plant_faults(table.slice(0, min(n_rows, 100_000)))
    ours_found = {a.column for a in check_table(faulty, ours)}
    theirs_found = pandera_failures(theirs, faulty.to_pandas())
    clean_ok = not check_table(table, ours) and not pandera_failures(theirs, frame)
    if not (ours_found == theirs_found == planted and clean_ok):
        raise SystemExit(
            f"validators disagree: planted {sorted(planted)}, trainpipe {sorted(ours_found)}, "
            f"pandera {sorted(theirs_found)}, clean data passes both: {clean_ok}"
        )

    ours_s = best_of(lambda: check_table(table, ours), repeats)
    theirs_s = best_of(lambda: theirs.validate(frame, lazy=True), max(1, repeats // 2))
    print(f"checks      trainpipe {ours_s * 1e3:8.1f} ms   pandera {theirs_s * 1e3:8.1f} ms")

    import pandera.pandas as pandera

    unique_schema = pandera.DataFrameSchema(unique=list(frame.columns))
    dup_ours_s = best_of(lambda: duplicate_count(row_hashes(table)), max(1, repeats // 2))
    dup_theirs_s = best_of(lambda: unique_schema.validate(frame, lazy=True), 1)
    print(
        f"duplicates  trainpipe {dup_ours_s * 1e3:8.1f} ms   pandera {dup_theirs_s * 1e3:8.1f} ms"
    )

    import pandas
    import pandera as pandera_package

    result = {
        "benchmark": "validation",
        "rows": n_rows,
        "columns": table.num_columns,
        "checks": "types, ranges, missing fraction, allowed categories",
        "trainpipe_rows_per_s": round(n_rows / ours_s),
        "pandera_rows_per_s": round(n_rows / theirs_s),
        "ratio": round(theirs_s / ours_s, 2),
        "duplicates_trainpipe_rows_per_s": round(n_rows / dup_ours_s),
        "duplicates_pandera_rows_per_s": round(n_rows / dup_theirs_s),
        "duplicates_ratio": round(dup_theirs_s / dup_ours_s, 2),
        "faults_found_by_both": sorted(planted),
        "pyarrow": pa.__version__,
        "pandas": pandas.__version__,
        "pandera": pandera_package.__version__,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
