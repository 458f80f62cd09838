"""How the compiled pipeline runs on a cluster: image, GPUs, shared memory, retries, secrets,
scheduling (node selector, tolerations) and multi-node training through Kubeflow Trainer.

``kfp.local`` ignores these settings; they only shape the IR that ``trainpipe compile`` writes
and the TrainJob that pretrain/finetune create when ``num_nodes > 1``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainpipe import __version__
from trainpipe.configbase import Section

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/trainpipe/trainpipe"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def default_image() -> str:
    # The image tag is the package version, so a compiled pipeline runs the code it came from.
    return f"{DEFAULT_IMAGE_REPOSITORY}:{__version__}"


class Toleration(Section):
    """One Kubernetes toleration, spelled as in a Pod spec."""

    key: str = ""
    """Taint key; empty with operator Exists tolerates every taint."""

    operator: Literal["Equal", "Exists"] = "Equal"
    """``Equal`` matches ``value``; ``Exists`` matches any value of ``key``."""

    value: str = ""
    """Taint value for operator Equal; must be empty for Exists."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; None tolerates every effect."""

    # camelCase as in a Pod spec, so tolerations copy-paste from Kubernetes YAML.
    tolerationSeconds: int | None = Field(None, ge=0)
    """How long a NoExecute taint is tolerated before eviction; None means forever."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError(f"operator Exists takes no value (got {self.value!r}); drop value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without key needs operator: Exists")
        return self

    def to_k8s(self) -> dict:
        """The Pod-spec dict, without unset fields."""
        return {k: v for k, v in self.model_dump().items() if v not in (None, "")}


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

    num_nodes: int = Field(1, ge=1, le=1024)
    """Nodes for pretrain and finetune. 1 runs torchrun inside the component's own pod; more
    creates a Kubeflow Trainer TrainJob with this many nodes (``gpus_per_node`` GPUs each) and
    the component pod only launches it, waits, and streams its logs."""

    namespace: str = Field("trainpipe", pattern=DNS_LABEL)
    """Namespace of the TrainJobs (multi-node training); the pipeline's ServiceAccount must be
    allowed to create, get and delete trainjobs and read pods/log there."""

    training_runtime: str = Field(
        "trainpipe-torch-distributed", pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
    )
    """ClusterTrainingRuntime the TrainJobs use (e.g. Trainer's ``torch-distributed`` or the
    project's ``trainpipe-torch-distributed`` from k8s/trainer/)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the training pods (pretrain, finetune, TrainJob nodes) must match, e.g.
    ``{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}``."""

    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations of the training pods, e.g. ``[{key: nvidia.com/gpu, operator: Exists,
    effect: NoSchedule}]`` for tainted GPU nodes."""


def cluster_unreadable_paths(cfg, *, continual: bool = False) -> list[str]:
    """The config's data and storage locations that are paths on this machine, which no
    cluster pod can read (``["data.source '/home/me/t.parquet'", ...]``)."""
    from trainpipe.data.config import BUILTIN_DIGITS

    source = ("continual.source", cfg.continual.source) if continual else None
    places = [source or ("data.source", cfg.data.source)]
    if cfg.language_model.enabled and not continual:  # the language-model DAG's own inputs
        places = cfg.language_model.inputs()
    found = []
    for key, uri in (*places, ("storage.uri", cfg.storage.uri)):
        if uri and uri != BUILTIN_DIGITS and ("://" not in uri or uri.startswith("file://")):
            found.append(f"{key} {uri!r}")
    return found
