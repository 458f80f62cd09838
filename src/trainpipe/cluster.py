"""How the compiled pipeline runs on a cluster: image, GPUs, shared memory, retries, secrets.

``kfp.local`` ignores these settings; they only shape the IR that ``trainpipe compile`` writes.
"""

from __future__ import annotations

from pydantic import Field

from trainpipe import __version__
from trainpipe.configbase import Section

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/trainpipe/trainpipe"


def default_image() -> str:
    # The image tag is the package version, so a compiled pipeline runs the code it came from.
    return f"{DEFAULT_IMAGE_REPOSITORY}:{__version__}"


class ClusterConfig(Section):
    image: str = Field(default_factory=default_image)
    """Image every component runs in (the training image, tagged with the package version)."""

    gpus_per_node: int = Field(1, ge=0, le=16)
    """GPUs requested by the pretrain and finetune pods (0 for CPU-only clusters)."""

    accelerator_type: str = "nvidia.com/gpu"
    """Extended resource name of the accelerator."""

    shm_size: str = "2Gi"
    """Size of the in-memory emptyDir mounted at /dev/shm (PyTorch data loaders need it)."""

    retries: int = Field(2, ge=0, le=10)
    """Retries of the training stages on the cluster (pods get preempted); local runs fail fast."""

    retry_backoff_s: int = Field(60, ge=0)
    """Wait before the first retry, doubled after each one."""

    s3_secret_name: str = "trainpipe-s3"
    """Kubernetes Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3 access.
    Leave empty to rely on IRSA (a ServiceAccount bound to an IAM role)."""
