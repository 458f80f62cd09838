"""Config: defaults run the demo; every bad key or value is one clear line."""

from __future__ import annotations

import pytest

from trainpipe.config import Config, load_config
from trainpipe.errors import ConfigError


def test_defaults_are_the_demo():
    cfg = load_config()
    assert cfg.data.source == "digits"
    assert cfg.storage.uri == "trainpipe-runs"
    assert cfg.cluster.image.endswith(":0.1.0") or ":" in cfg.cluster.image
    assert Config.from_json(cfg.to_json()) == cfg


def test_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: cnn\n  depth: 3\nfinetune:\n  lr: 0.01\n")
    cfg = load_config(path, ["finetune.lr=3e-4", "data.feature_shape=[1, 8, 8]"])
    assert cfg.model.name == "cnn" and cfg.model.depth == 3
    assert cfg.finetune.lr == pytest.approx(3e-4)
    assert cfg.data.feature_shape == [1, 8, 8]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["model.name=resnet"],
            "model.name='resnet': Input should be 'auto', 'mlp', 'cnn', 'vit', 'transformer' "
            "or 'linear'",
        ),
        (["model.nme=cnn"], "unknown key 'model.nme'; allowed keys here: name, hidden_dim"),
        (["finetune.lr=-1"], "config error: finetune.lr=-1: Input should be greater than 0"),
        (["nosuch=1"], "unknown key 'nosuch'; allowed keys here: pipeline_name, storage"),
        (["storage.uri=gs://b/p"], "scheme 'gs' is not supported"),
        (["data.test_fraction=0.45", "data.validation_fraction=0.4"], "leaves under 20%"),
        (["registry.model_name=Bad_Name"], "registry.model_name='Bad_Name'"),
        (["lr"], "--set 'lr' is not key=value"),
        (["storage.uri="], "storage.uri='': is empty, which would write into the current"),
        (["data.source="], "data.source='': is empty; give 'digits'"),
        (["storage.endpoint_url=notaurl"], "storage.endpoint_url='notaurl': is not an http(s)"),
        (["storage.endpoint_url=ftp://x:21"], "give the S3 endpoint like http://minio.minio:9000"),
    ],
)
def test_bad_values_name_key_value_and_rule(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("storage:\n  uri: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 19\)"):
        load_config(latin1)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.model.depth = 5
