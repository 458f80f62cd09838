"""Where a component is the entry, a stage fails like the CLI does: one line, non-zero exit.

The stage functions themselves raise ``TrainpipeError`` (callers in the library and tests see
the exception); each component body calls ``stage_entry(run_x)(...)``.
"""

from __future__ import annotations

import functools
import resource
import sys
from collections.abc import Callable
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


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ``ru_maxrss`` in
    KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
