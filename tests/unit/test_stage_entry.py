"""A component's entry: a finished stage logs its process's peak RSS (run.log under ``trainpipe
run``); a user-fixable error is one line and exit 1."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trainpipe.errors import DataError
from trainpipe.stages.entry import peak_rss_mib, stage_entry


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def run_allocating(mib: int) -> float:
    block = np.ones(mib * 2**20, dtype=np.uint8)  # touched, so it is resident
    assert block[::4096].sum() == mib * 256
    return resident_mib()


def test_finished_stage_logs_its_peak_rss(capsys):
    before = peak_rss_mib()
    resident_while_allocated = stage_entry(run_allocating)(64)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays free for a command's JSON result
    (line,) = captured.err.splitlines()
    match = re.fullmatch(r"run_allocating: peak RSS (\d+\.\d) MiB", line)
    assert match, line
    # In MiB (ru_maxrss is KiB on Linux), at least what the stage held at its height.
    assert resident_while_allocated - 1 <= float(match.group(1)) <= before + 64 + 16


def test_failed_stage_is_one_line_and_exit_1(capsys):
    def run_failing():
        raise DataError("data error: shard x is missing; rewrite it")

    with pytest.raises(SystemExit) as exit_info:
        stage_entry(run_failing)()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "trainpipe: data error: shard x is missing; rewrite it\n"
    assert captured.out == ""


def test_a_stage_started_by_a_larger_process_reports_its_own_peak():
    """Linux carries ``ru_maxrss`` over from the parent through fork and exec: a stage that
    kfp.local (or a benchmark) starts would report its parent's size. The peak is the child's."""
    import subprocess
    import sys

    held = np.ones(400 * 2**20, dtype=np.uint8)  # this process: 400 MiB larger than the child
    assert held[::4096].sum() == 400 * 256
    code = "from trainpipe.stages.entry import peak_rss_mib; print(peak_rss_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own = float(child.stdout)
    assert 5 < own < peak_rss_mib() - 300, (own, peak_rss_mib())
