"""Keep ``kfp.local``'s console output readable.

kfp.local echoes each component's output through ``print``; KFP's executor logs the whole
executor input (our full config JSON, once per stage) at INFO level with no switch to turn it
off. This filter drops that block and the executor's module-loading lines and passes
everything else (progress, stage results, errors) through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Iterator

_NOISE = ("Looking for component `", "Loading KFP component ")
_BLOCK_START = "Got executor_input:"
_BLOCK_END = "    }"


class _ExecutorNoiseFilter(io.TextIOBase):
    def __init__(self, target):
        self.target = target
        self.pending = ""
        self.skipping = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._emit(line + "\n")
        return len(text)

    def _emit(self, line: str) -> None:
        stripped = line.rstrip("\n")
        if self.skipping:
            if stripped == _BLOCK_END:
                self.skipping = False
            return
        if _BLOCK_START in stripped:
            self.skipping = True
            return
        if any(marker in stripped for marker in _NOISE):
            return
        self.target.write(line)

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""
        self.target.flush()


@contextlib.contextmanager
def readable_kfp_output() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _ExecutorNoiseFilter(original)
    try:
        with warnings.catch_warnings():
            # Locally the image setting is ignored by design: components run in this Python.
            warnings.filterwarnings("ignore", message="You may be attemping to run a task")
            yield
    finally:
        sys.stdout.flush()
        sys.stdout = original
