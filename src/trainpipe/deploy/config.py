"""How the deploy stage rolls the new champion out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainpipe.configbase import Section

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class DeployConfig(Section):
    target: Literal["local", "kubernetes", "kserve"] = "local"
    """``local`` starts the ONNX Runtime server on a loopback port, sends a real inference
    request, checks the answer and stops it. ``kubernetes`` points the serving Deployment (the
    Helm chart's) at the new version; ``kserve`` points an InferenceService's storageUri at it.
    Both wait for the rollout, send a smoke inference through the Service and, if anything
    fails, roll back the Deployment/InferenceService and the champion pointer."""

    smoke_examples: int = Field(8, ge=1, le=1024)
    """Test examples sent in the smoke inference; answers must match the exported model's."""

    namespace: str = Field("trainpipe", pattern=DNS_LABEL)
    """Namespace of the serving Deployment or InferenceService."""

    deployment_name: str = Field("trainpipe", pattern=DNS_LABEL)
    """target kubernetes: the serving Deployment (the chart's release name by default)."""

    container_name: str = Field("server", pattern=DNS_LABEL)
    """target kubernetes: the container running ``trainpipe serve --model URI``; its
    ``--model`` argument is set to the new model version."""

    inference_service: str = Field("", pattern=r"^([a-z]([-a-z0-9]{0,61}[a-z0-9])?)?$")
    """target kserve: the InferenceService whose ``spec.predictor.model.storageUri`` is set."""

    service_url: str | None = None
    """Base URL the smoke inference goes to, e.g. ``http://trainpipe.trainpipe.svc:8080``.
    Required for target kubernetes; kserve defaults to the InferenceService's status address."""

    rollout_timeout_s: float = Field(600.0, gt=0)
    """How long the rollout may take before it is rolled back."""

    smoke_timeout_s: float = Field(60.0, gt=0)
    """How long the smoke inference is retried (Service endpoints take a moment to follow)."""

    accuracy_tolerance: float = Field(0.01, ge=0.0, le=1.0)
    """Largest gap allowed between the served model's accuracy on the whole test split and the
    evaluate stage's on the same examples: ONNX Runtime and torch may split a near-tie
    differently. An int8 package adds the export bound it passed (``max_accuracy_drop``)."""

    latency_requests: int = Field(200, ge=1, le=100_000)
    """Single-example requests timed against the started server; p50 and p99 go to
    deploy.json."""

    @model_validator(mode="after")
    def _target_needs(self) -> DeployConfig:
        if self.target == "kubernetes" and not self.service_url:
            raise ValueError(
                "target kubernetes needs deploy.service_url, the serving Service's URL "
                "(e.g. http://trainpipe.trainpipe.svc:8080)"
            )
        if self.target == "kserve" and not self.inference_service:
            raise ValueError("target kserve needs deploy.inference_service (its name)")
        if self.service_url and not self.service_url.startswith(("http://", "https://")):
            raise ValueError(f"deploy.service_url {self.service_url!r} must start with http(s)://")
        return self
