"""Cluster config: scheduling and multi-node fields validate with one clear line."""

from __future__ import annotations

import pytest

from trainpipe.config import load_config
from trainpipe.errors import ConfigError


def test_scheduling_defaults_are_single_node_and_unconstrained():
    cluster = load_config().cluster
    assert cluster.num_nodes == 1
    assert cluster.node_selector == {} and cluster.tolerations == []
    assert cluster.training_runtime == "trainpipe-torch-distributed"


def test_tolerations_parse_from_pod_spec_yaml():
    cfg = load_config(
        None,
        [
            "cluster.tolerations=[{key: gpu, operator: Exists},"
            " {key: a, value: b, effect: NoExecute,"
            " tolerationSeconds: 5}]"
        ],
    )
    assert [t.to_k8s() for t in cfg.cluster.tolerations] == [
        {"key": "gpu", "operator": "Exists"},
        {
            "key": "a",
            "operator": "Equal",
            "value": "b",
            "effect": "NoExecute",
            "tolerationSeconds": 5,
        },
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.tolerations=[{key: a, operator: Exists, value: b}]", "takes no value"),
        ("cluster.tolerations=[{value: b}]", "needs operator: Exists"),
        ("cluster.tolerations=[{key: a, effect: Sometimes}]", "effect"),
        ("cluster.num_nodes=0", "cluster.num_nodes=0"),
        ("cluster.namespace=Bad_NS", "cluster.namespace='Bad_NS'"),
    ],
)
def test_bad_scheduling_values_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
