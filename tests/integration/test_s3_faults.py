"""A whole ``trainpipe run`` against S3 through a fault-injecting proxy.

The proxy (tests/support/fault_proxy.py) sits between every stage and the moto S3 server and,
at the given rate, answers 503 SlowDown, resets connections before and after the server applied
a request, and cuts response bodies short. The run must complete, every object it committed must
verify against its manifest, and the registry must hold exactly one complete version with a
sound champion pointer (a write whose answer was lost is not done twice).

The endpoint reaches the stages only through config (storage.endpoint_url), as a user sets it.
"""

from __future__ import annotations

import pytest

from tests.integration.test_local_run import FAST, run_id_of, trainpipe
from tests.support.fault_proxy import FAULTS, FaultProxy
from trainpipe.artifacts import ArtifactSet
from trainpipe.registry import Registry
from trainpipe.storage import open_store

pytestmark = pytest.mark.slow

MODEL = "digits-classifier"


@pytest.mark.parametrize(("rate", "seed"), [(0.05, 5), (0.15, 15)])
def test_run_completes_through_s3_faults(s3_endpoint, s3_bucket, tmp_path, rate, seed):
    with FaultProxy(s3_endpoint, rate=rate, seed=seed) as proxy:
        done = trainpipe(
            "run",
            "--output",
            str(tmp_path / "local"),
            *("--set", f"storage.uri={s3_bucket}/pipe"),
            *("--set", f"storage.endpoint_url={proxy.url}"),
            *("--set", "gate.min_value=0.5"),
            *FAST,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gate: PROMOTE" in done.stdout
    # About 150 S3 requests per run: the faults hit several stages (each kind on its own is
    # covered in tests/unit/test_storage_faults.py).
    injected = sum(proxy.counts[fault] for fault in FAULTS)
    assert injected >= rate * proxy.counts["requests"] / 2, proxy.counts
    assert "Traceback" not in done.stderr

    # Everything is checked directly against the server, past the proxy.
    store = open_store(f"{s3_bucket}/pipe", endpoint_url=s3_endpoint)
    manifests = [k for k in store.list() if k.endswith("/manifest.json")]
    assert len(manifests) >= 8
    for manifest in manifests:
        artifacts = ArtifactSet.open_in(store, manifest.removesuffix("/manifest.json"))
        for name in artifacts.names():
            artifacts.get_bytes(name)  # raises ChecksumMismatch on any mismatch
    registry = Registry(store, MODEL)
    assert registry.versions() == ["1"]
    assert store.list(f"registry/{MODEL}/claims") == [f"registry/{MODEL}/claims/1"]
    champion = registry.champion()
    assert champion is not None and champion.version == "1"
    assert "model.onnx" in registry.open_version("1").names()
    assert store.exists(f"runs/{run_id_of(done.stdout)}/deploy/deploy.json")
