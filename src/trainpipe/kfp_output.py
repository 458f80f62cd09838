"""Keep ``trainpipe run``'s console to progress, stage lines and errors; the rest goes to a log.

kfp.local echoes each component's output through ``print`` and logs its own orchestration
(task outputs, artifact metadata, the whole executor input with our config JSON) at INFO level
with no switch to turn it off. Libraries inside the components add their own INFO lines
(onnxscript's rewrite passes, for one). Everything is written to the run's log file unchanged
(colours stripped); the console gets only:

- ``[stage] running`` when kfp.local starts a task, and ``[stage] FAILED`` when one fails;
- the stages' own result lines (``[stage] ...``), except the per-epoch training lines, which a
  terminal shows as one line overwritten in place (progress) and a pipe or file does not get;
- error lines (``trainpipe: ...``) and a failing stage's last traceback line.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([\w-]+)'")
_TASK_FAILED = re.compile(r"Task '([\w-]+)' finished with status FAILURE")
_STAGE_LINE = re.compile(r"^\[([a-z][a-z_]*)\] (.*)$")  # [validate_data] ..., [continual_plan] ...
_EPOCH_LINE = re.compile(r"^epoch +\d+/\d+ ")
_ERROR_PREFIXES = ("trainpipe: ", "error: ")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b.*: ")


def console_line(raw: str) -> tuple[str, bool] | None:
    """What the console shows for one line of kfp.local output, and whether it is transient
    progress (a per-epoch line); None: the log file only."""
    line = _ANSI.sub("", raw).strip()
    if match := _TASK_START.search(line):
        return f"[{match.group(1).replace('-', '_')}] running", False
    if match := _TASK_FAILED.search(line):
        return f"[{match.group(1).replace('-', '_')}] FAILED", False
    if match := _STAGE_LINE.match(line):
        return line, bool(_EPOCH_LINE.match(match.group(2)))
    if line.startswith(_ERROR_PREFIXES) or _EXCEPTION_LINE.match(line):
        return line, False
    return None


class _ConsoleFilter(io.TextIOBase):
    """A stdout stand-in: every line to ``log``, the lines :func:`console_line` keeps to
    ``console``."""

    def __init__(self, console: TextIO, log: TextIO):
        self.console = console
        self.log = log
        self.pending = ""
        self.terminal = console.isatty()
        self.progress_shown = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        self.log.write(_ANSI.sub("", line) + "\n")
        shown = console_line(line)
        if shown is None:
            return
        text, transient = shown
        if transient and not self.terminal:
            return
        if self.progress_shown:
            self.console.write("\r\x1b[K")  # clear the progress line before writing over it
        self.console.write(text if transient else text + "\n")
        self.progress_shown = transient
        self.console.flush()

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""
        self.log.flush()
        self.console.flush()


@contextlib.contextmanager
def quiet_kfp_output(log_path: Path) -> Iterator[None]:
    """Route kfp.local's stdout through the console filter, appending everything to
    ``log_path``; kfp's warnings about settings that only matter on a cluster are dropped."""
    original = sys.stdout
    with open(log_path, "a", encoding="utf-8") as log:
        sys.stdout = _ConsoleFilter(original, log)
        try:
            with warnings.catch_warnings():
                # Locally the image, resources and accelerators are ignored by design: components
                # run in this Python. The compiled IR keeps them for the cluster.
                warnings.filterwarnings("ignore", message="You may be attemping to run a task")
                warnings.filterwarnings(
                    "ignore", message=r"Task '.*': settings .* have no effect in the current local"
                )
                yield
        finally:
            console = sys.stdout
            console.flush()
            if console.progress_shown:
                original.write("\r\x1b[K")
            sys.stdout = original
