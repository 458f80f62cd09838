"""What every stage needs: the validated config, the run id and the artifact store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trainpipe.artifacts import ArtifactSet, ArtifactWriter
from trainpipe.config import Config
from trainpipe.data.datasets import Dataset
from trainpipe.data.stored import load_validated
from trainpipe.storage import Store, open_store

STAGES = (
    "validate_data",
    "pretrain",
    "finetune",
    "evaluate",
    "export_onnx",
    "gate",
    "register",
    "deploy",
)


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}"


@dataclass(frozen=True)
class StageContext:
    cfg: Config
    run_id: str
    store: Store
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)

    def writer(self, stage: str, inputs: dict[str, str] | None = None) -> ArtifactWriter:
        return ArtifactWriter(
            self.store,
            f"{run_prefix(self.run_id)}/{stage}",
            stage=stage,
            run_id=self.run_id,
            inputs=inputs,
            started=(self.started_at, self.started_monotonic),
        )

    def open(self, uri: str) -> ArtifactSet:
        return ArtifactSet.open(uri, endpoint_url=self.cfg.storage.endpoint_url)

    def load_data(self, uri: str) -> Dataset:
        """The validated splits at ``uri``: arrays, or streamed shards for a sharded source."""
        return load_validated(
            self.open(uri), self.cfg.data.streaming, self.cfg.storage.endpoint_url
        )


def make_context(config_json: str, run_id: str) -> StageContext:
    cfg = Config.from_json(config_json)
    return StageContext(
        cfg, run_id, open_store(cfg.storage.uri, endpoint_url=cfg.storage.endpoint_url)
    )
