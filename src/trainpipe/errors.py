"""Errors a user can cause and fix. The CLI prints their message as one line and exits non-zero.

Each message names what is wrong (the key, the value, the URI) and how to fix it.
"""

from __future__ import annotations


class TrainpipeError(Exception):
    """Base for every error the user can fix; never shown with a traceback."""


class ConfigError(TrainpipeError, ValueError):
    """A config key or value is invalid."""


class DataError(TrainpipeError):
    """Input data cannot be read or fails validation."""


class TrainingError(TrainpipeError):
    """Training diverged or cannot proceed (e.g. NaN loss)."""


class ExportError(TrainpipeError):
    """The ONNX export or its parity check failed."""


class DeployError(TrainpipeError):
    """The model could not be served or failed its smoke test."""
