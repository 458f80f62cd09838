"""`trainpipe registry list|show|promote|rollback` against a real registry (files and S3)."""

from __future__ import annotations

import json

import pytest

from tests.support.tiny_onnx import tiny_onnx
from trainpipe.cli import main
from trainpipe.registry import Registry
from trainpipe.storage import open_store

ENDPOINTS: dict[str, str] = {}
"""S3 endpoint per store URI: given as config (--set storage.endpoint_url), as users do."""


@pytest.fixture(params=["file", "s3"])
def store_uri(request, tmp_path):
    if request.param == "file":
        return str(tmp_path / "store")
    uri = request.getfixturevalue("s3_bucket") + "/team"
    ENDPOINTS[uri] = request.getfixturevalue("s3_endpoint")
    return uri


def registry_cli(store_uri: str, *args: str, capsys) -> tuple[int, str, str]:
    settings = ["--set", f"storage.uri={store_uri}"]
    if store_uri in ENDPOINTS:
        settings += ["--set", f"storage.endpoint_url={ENDPOINTS[store_uri]}"]
    code = main(["registry", *args, *settings, "--model", "digits"])
    out, err = capsys.readouterr()
    return code, out, err


def open_test_store(store_uri: str):
    return open_store(store_uri, endpoint_url=ENDPOINTS.get(store_uri))


def seed(store_uri: str) -> Registry:
    registry = Registry(open_test_store(store_uri), "digits")
    for i, accuracy in enumerate((0.91, 0.95), start=1):
        files = {
            "model.onnx": tiny_onnx(str(i)),
            "model.json": json.dumps({"name": "digits"}).encode(),
            "lineage.json": json.dumps({"data_source": "digits", "git_sha": f"sha{i}"}).encode(),
        }
        summary = {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "log_loss": 0.2}
        registry.register(files, run_id=f"run-{i}", lineage={}, summary=summary)
    registry.promote("1", reason="first")
    return registry


def test_list_show_promote_rollback(store_uri, capsys):
    code, out, _ = registry_cli(store_uri, "list", capsys=capsys)
    assert code == 0 and out.startswith("no versions of digits under ")

    registry = seed(store_uri)
    code, out, _ = registry_cli(store_uri, "list", capsys=capsys)
    header, first, second, legend = out.splitlines()
    assert legend.startswith("* marks the champion: the version `trainpipe serve`")
    assert header.split()[:2] == ["version", "created"]
    assert first.startswith("*       1  20")
    assert first.split()[-4:] == ["0.9100", "0.9000", "0.2000", "run-1"]
    assert second.startswith("        2  ")

    code, out, _ = registry_cli(store_uri, "show", capsys=capsys)
    assert code == 0
    assert out.splitlines()[0] == "digits version 1  (champion)"
    assert "accuracy 0.9100  macro-F1 0.9000  log loss 0.2000" in out
    assert "  data       digits\n" in out and "  code       trainpipe ?, git sha1\n" in out
    assert f"model.onnx ({len(tiny_onnx('1'))} B)" in out

    code, out, _ = registry_cli(store_uri, "show", "2", "--json", capsys=capsys)
    shown = json.loads(out)
    assert (shown["version"], shown["champion"], shown["run_id"]) == ("2", False, "run-2")
    assert shown["summary"]["accuracy"] == 0.95 and shown["lineage"]["git_sha"] == "sha2"

    code, out, _ = registry_cli(store_uri, "promote", "2", "--reason", "better", capsys=capsys)
    assert (code, out) == (0, "champion of digits: version 1 -> version 2\n")
    assert registry.history()[-1]["reason"] == "better"

    code, out, _ = registry_cli(store_uri, "rollback", capsys=capsys)
    assert (code, out) == (0, "champion of digits: version 2 -> version 1 (rolled back)\n")
    assert registry.champion().version == "1"


def test_mistakes_end_with_one_clear_line(store_uri, capsys):
    code, _, err = registry_cli(store_uri, "show", capsys=capsys)
    assert code == 1
    assert err == "trainpipe: registry error: digits has no champion yet; name a version " \
        "(versions: none)\n"  # fmt: skip
    seed(store_uri)
    code, _, err = registry_cli(store_uri, "promote", "9", capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "has no version '9' (versions: 1, 2)" in err
    code, _, err = registry_cli(store_uri, "promote", capsys=capsys)
    assert code == 2 and "registry promote needs a VERSION" in err
    code, _, err = registry_cli(store_uri, "rollback", capsys=capsys)
    assert code == 1 and err == (
        "trainpipe: registry error: digits has no previous champion to roll back to\n"
    )


def test_corrupt_pointer_is_reported_and_repaired_only_by_force(store_uri, capsys):
    registry = seed(store_uri)
    store = open_test_store(store_uri)
    store.put_bytes("registry/digits/champion.json", b"[1, 2]")

    code, out, err = registry_cli(store_uri, "list", capsys=capsys)
    lines = out.splitlines()  # versions still listed, none marked, then the legend
    assert code == 1 and len(lines) == 4 and not any(x.startswith("*") for x in lines[:3])
    assert err.startswith("trainpipe: registry error: ") and err.count("\n") == 1
    assert "champion.json is corrupt (it is not a JSON object); nothing was changed" in err

    code, _, err = registry_cli(store_uri, "promote", "2", capsys=capsys)
    assert code == 1 and "--force --model digits" in err
    assert store.get_bytes("registry/digits/champion.json") == b"[1, 2]"

    code, out, _ = registry_cli(store_uri, "promote", "2", "--force", capsys=capsys)
    # The history still knows version 1 was the champion: the repair keeps it for rollback.
    assert (code, out) == (0, "champion of digits: version 1 -> version 2\n")
    champion = registry.champion()
    assert champion.version == "2" and champion.record["reason"] == "manual promotion (forced)"


def test_list_without_a_model_lists_every_model_in_the_store(store_uri, capsys):
    """`registry list --output STORE` (the option `run` takes) finds every model there."""
    seed(store_uri)
    other = Registry(open_test_store(store_uri), "grades")
    other.register({"model.onnx": b"g"}, run_id="run-g", lineage={}, summary={"accuracy": 0.7})
    endpoint = []
    if store_uri in ENDPOINTS:
        endpoint = ["--set", f"storage.endpoint_url={ENDPOINTS[store_uri]}"]
    code = main(["registry", "list", "--output", store_uri, *endpoint])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("digits  (") and lines[0].endswith("/registry/digits)")
    assert lines[2].startswith("*       1") and lines[3].startswith("        2")
    assert lines[4].startswith("grades  (") and lines[6].startswith("        1")
    assert lines[7].startswith("* marks the champion") and len(lines) == 8

    code = main(["registry", "list", "--output", store_uri + "-empty", *endpoint])
    out, _ = capsys.readouterr()
    assert code == 0 and out.startswith("no models under ") and "--output" in out
