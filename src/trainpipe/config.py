"""One typed, validated config for the whole pipeline: YAML in, clear errors out.

    cfg = load_config("my.yaml", ["finetune.lr=3e-4", "model.name=cnn"])

Defaults run the demo on the built-in digits. A wrong key or value raises :class:`ConfigError`
with one line naming the key, the bad value and what is allowed, before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from trainpipe.cluster import ClusterConfig
from trainpipe.configbase import Section
from trainpipe.continual.config import ContinualConfig
from trainpipe.data.config import DataConfig
from trainpipe.deploy.config import DeployConfig
from trainpipe.errors import ConfigError
from trainpipe.evaluate.config import GateConfig
from trainpipe.export.config import ExportConfig
from trainpipe.models.config import ModelConfig
from trainpipe.train.config import FinetuneConfig, PretrainConfig
from trainpipe.train.lm_config import LanguageModelConfig
from trainpipe.tune.config import TuneConfig
from trainpipe.tune.space import check_space


class StorageConfig(Section):
    uri: str = "trainpipe-runs"
    """Root of all artifacts: a local path, file:///abs/path or s3://bucket/prefix."""

    endpoint_url: str | None = None
    """S3 endpoint for MinIO/SeaweedFS/Ceph; None uses AWS_ENDPOINT_URL or AWS itself."""

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        if not uri.strip():
            raise ValueError(
                "is empty, which would write into the current directory; give a path, "
                "file:///abs/path or s3://bucket/prefix"
            )
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in ("", "file", "s3"):
            raise ValueError(f"scheme {scheme!r} is not supported; use a path, file:// or s3://")
        return uri

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "is not an http(s) URL; give the S3 endpoint like http://minio.minio:9000, "
                "or leave it unset for AWS"
            )
        return url


class RegistryConfig(Section):
    model_name: str = Field("digits-classifier", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    """Name of the model in the registry (lowercase letters, digits and dashes)."""


class Config(Section):
    pipeline_name: str = Field("trainpipe", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    """Name of the KFP pipeline."""

    storage: StorageConfig = StorageConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    gate: GateConfig = GateConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    deploy: DeployConfig = DeployConfig()
    cluster: ClusterConfig = ClusterConfig()
    continual: ContinualConfig = ContinualConfig()
    tune: TuneConfig = TuneConfig()
    language_model: LanguageModelConfig = LanguageModelConfig()
    """Text: with ``enabled: true`` the pipeline is the language-model DAG
    (``docs/language-models.md``)."""

    @model_validator(mode="after")
    def _tune_space_fits(self) -> Config:
        if self.tune.enabled:
            check_space(self)
        return self

    @model_validator(mode="after")
    def _language_model_fits(self) -> Config:
        if not self.language_model.enabled:
            return self
        if self.deploy.target != "local":
            raise ValueError(
                f"deploy.target={self.deploy.target!r}: the language-model DAG does not roll "
                "out to a cluster itself yet; use deploy.target local and serve the registry "
                "model on the cluster (the server follows the champion pointer)"
            )
        if self.cluster.num_nodes > 1 or self.tune.enabled:
            raise ValueError(
                "the language-model DAG trains in the step's own pod and has no tune step; "
                "set cluster.num_nodes 1 and tune.enabled false"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Config:
        return _validate(json.loads(text))


def _format_error(exc: ValidationError, root: type[Section] | None = None) -> str:
    """The first problem as one line: key, bad value, what is allowed."""
    error = exc.errors(include_url=False)[0]
    key = ".".join(str(part) for part in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        parent = _section_at(error["loc"][:-1], root or Config)
        allowed = ", ".join(parent.model_fields) if parent else "see docs"
        return f"config error: unknown key {key!r}; allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if not error["loc"]:
        return f"config error: {message}"
    if isinstance(value, dict):
        return f"config error: {key}: {message}"
    return f"config error: {key}={value!r}: {message}"


def _section_at(loc: tuple[Any, ...], root: type[Section]) -> type[Section] | None:
    section: type[Section] = root
    for part in loc:
        field = section.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, Section)):
            return None
        section = annotation
    return section


def _validate(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def _apply_override(raw: dict[str, Any], assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"config error: --set {assignment!r} is not key=value (e.g. lr=0.1)")
    # YAML parses the value so numbers, booleans, null and lists need no extra syntax.
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: --set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (optional), apply ``key=value`` overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config error: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config error: {path} is not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config error: {path} must hold a mapping of sections")
        raw = loaded or {}
    for assignment in overrides or []:
        _apply_override(raw, assignment)
    return _validate(raw)
