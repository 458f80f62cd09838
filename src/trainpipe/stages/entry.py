"""Stage entry points fail like the CLI does: one line naming the problem, non-zero exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from trainpipe.errors import TrainpipeError

F = TypeVar("F", bound=Callable)


def stage_entry(func: F) -> F:
    """Turn a user-fixable error into one 'error:' line and exit 1 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TrainpipeError as exc:
            print(f"trainpipe: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
