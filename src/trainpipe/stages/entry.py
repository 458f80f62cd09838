"""Where a component is the entry, a stage fails like the CLI does: one line, non-zero exit.

The stage functions themselves raise ``TrainpipeError`` (callers in the library and tests see
the exception); each component body calls ``stage_entry(run_x)(...)``.
"""

from __future__ import annotations

import functools
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trainpipe.errors import TrainpipeError

F = TypeVar("F", bound=Callable)


def stage_entry(func: F) -> F:
    """``func`` with a user-fixable error turned into one 'trainpipe: ...' line on stderr and
    exit 1 instead of a traceback; a finished stage logs its process's peak RSS on stderr (stdout
    may carry a command's JSON result; kfp.local merges both into run.log under ``trainpipe
    run``): the figure to size a pod's memory limit by, stage by stage."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except TrainpipeError as exc:
            print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)
        print(f"{func.__name__}: peak RSS {peak_rss_mib():.1f} MiB", file=sys.stderr, flush=True)
        return result

    return wrapper  # type: ignore[return-value]


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident set size so far, in MiB (0 for a process that is gone): the
    kernel's high-water mark of its memory, ``VmHWM``, which starts afresh at ``exec``. Not
    ``ru_maxrss``: Linux carries that over from the parent through fork and exec, so a stage
    started by a larger process would report the parent's size instead of its own. Where
    ``/proc`` is missing, this process's ``ru_maxrss`` (KiB on Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        if pid != "self":
            return 0.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
