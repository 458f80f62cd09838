"""What `trainpipe run` shows on the console from kfp.local's output, and what only the log gets."""

from __future__ import annotations

import io

from trainpipe.kfp_output import _ConsoleFilter

# Lines as kfp.local 2.17 prints them during a run (colours included), trimmed.
KFP_OUTPUT = """\
15:47:54.739 - INFO - Running pipeline: \x1b[95m'trainpipe'\x1b[0m
15:47:54.746 - INFO - Executing task \x1b[96m'validate-data'\x1b[0m
    [KFP Executor 2026-11-30 15:47:58,257 INFO]: Using categorical units to plot a list of strings
    [validate_data] PASSED: no anomalies (train 1,167 rows)
15:47:59.219 - INFO - Task \x1b[96m'validate-data'\x1b[0m outputs:
    [pretrain] epoch   1/3 train_loss 6.0408 val_loss 5.5032 pair_accuracy 0.1815 lr 1.67e-03
      warnings.warn(
    /venv/lib/python3.11/site-packages/sklearn/metrics/_classification.py:304: UserWarning: x
    metrics: Metrics( name='metrics', metadata={'epoch_004_val_accuracy': 0.8963} )
15:48:04.978 - INFO - Executing task \x1b[96m'finetune'\x1b[0m
    trainpipe: data error: train.csv has no rows; supply a non-empty dataset
15:48:11.955 - ERROR - Task \x1b[96m'finetune'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


def test_console_keeps_progress_stage_lines_and_errors_the_log_keeps_everything():
    console, log = io.StringIO(), io.StringIO()
    out = _ConsoleFilter(console, log)
    out.write(KFP_OUTPUT)
    out.flush()
    assert console.getvalue().splitlines() == [
        "[validate_data] running",
        "[validate_data] PASSED: no anomalies (train 1,167 rows)",
        "[finetune] running",
        "trainpipe: data error: train.csv has no rows; supply a non-empty dataset",
        "[finetune] FAILED",
    ]
    assert log.getvalue().splitlines() == [
        line.replace("\x1b[95m", "").replace("\x1b[96m", "").replace("\x1b[91m", "")
        .replace("\x1b[0m", "")
        for line in KFP_OUTPUT.splitlines()
    ]  # fmt: skip


def test_a_terminal_sees_epoch_lines_as_one_line_overwritten_in_place():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    console = Terminal()
    out = _ConsoleFilter(console, io.StringIO())
    out.write(
        "    [pretrain] epoch   1/3 train_loss 6.04\n    [pretrain] epoch   2/3 train_loss 5.5\n"
    )
    out.write("15:48:04.978 - INFO - Executing task 'finetune'\n")
    assert console.getvalue() == (
        "[pretrain] epoch   1/3 train_loss 6.04"
        "\r\x1b[K[pretrain] epoch   2/3 train_loss 5.5"
        "\r\x1b[K[finetune] running\n"
    )
