"""Which stage `trainpipe run` blames: the task kfp.local reports, not the first missing output."""

from __future__ import annotations

import pytest

from trainpipe.local_run import failed_stage


def _kfp_failure(task: str, inside: str = "") -> RuntimeError:
    # kfp.local's orchestrator message, colours included (pipeline_orchestrator.py).
    where = f" inside \x1b[96m'{inside}'\x1b[0m" if inside else ""
    return RuntimeError(
        "Pipeline \x1b[95m'trainpipe'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
        f"Inner task failed: \x1b[96m'{task}'\x1b[0m{where}."
    )


@pytest.mark.parametrize(
    ("task", "inside", "stage"),
    [
        ("evaluate", "", "evaluate"),
        ("validate-data", "", "validate_data"),
        ("export-onnx", "", "export_onnx"),
        ("register", "condition-1", "register"),
        ("deploy", "gate-passed", "deploy"),
    ],
)
def test_the_failed_task_names_the_stage(task, inside, stage):
    assert failed_stage(_kfp_failure(task, inside)) == stage


def test_an_unexpected_message_is_unknown():
    assert failed_stage(RuntimeError("something else")) == "unknown"
