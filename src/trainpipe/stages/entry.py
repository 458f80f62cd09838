"""Where a component is the entry, a stage fails like the CLI does: one line, non-zero exit.

The stage functions themselves raise ``TrainpipeError`` (callers in the library and tests see
the exception); each component body calls ``stage_entry(run_x)(...)``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from trainpipe.errors import TrainpipeError

F = TypeVar("F", bound=Callable)


def stage_entry(func: F) -> F:
    """``func`` with a user-fixable error turned into one 'trainpipe: ...' line on stderr and
    exit 1 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TrainpipeError as exc:
            print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
