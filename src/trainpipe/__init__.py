"""trainpipe: a Kubernetes-native training pipeline (KFP v2) from raw data to a served model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainpipe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
