"""Reports (JSON verdicts, HTML with pictures, Markdown) and the CLI's exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from trainpipe.data.validation import validate_dataset, write_table
from trainpipe.data.validation.cli import main, parse_splits
from trainpipe.data.validation.synthetic import example_table


@pytest.fixture(scope="module")
def report():
    reference = example_table(500, seed=1)
    train = example_table(400, seed=3)
    test = pa.concat_tables([example_table(300, seed=2), train.slice(0, 3)])
    return validate_dataset(
        {"train": train, "test": test}, reference=reference, label_column="label"
    )


def test_json_report_has_a_verdict_per_check(report):
    data = json.loads(report.to_json())
    assert data["passed"] is False
    assert data["checks"]["leakage"] == {"verdict": "fail", "blocking": 1, "warnings": 0}
    assert data["checks"]["drift"]["verdict"] == "pass"
    assert data["checks"]["out_of_range"]["verdict"] == "skipped"
    assert data["splits"]["train"]["columns"]["x"]["histogram"]["counts"]
    assert data["splits"]["train"]["label"]["distribution"].keys() == {"0", "1", "2"}
    assert data["anomalies"][0]["message"].startswith("split=test check=leakage: 3 of 303")
    assert data["summary"].startswith("REJECTED: 1 blocking (leakage)")


def test_html_report_is_self_contained_with_histogram_pictures(report):
    page = report.to_html()
    assert page.count("<img") >= 6
    assert "src='data:image/png;base64," in page
    assert "split=test check=leakage" in page
    assert "http" not in page.split("<body>")[1]  # nothing fetched from elsewhere


def test_markdown_summary(report):
    text = report.to_markdown()
    assert text.startswith("# Data validation: REJECTED")
    assert "| leakage | fail | 1 | 0 |" in text


def test_save_writes_three_artifacts(report, tmp_path: Path):
    outputs = report.save(str(tmp_path / "out"))
    assert set(outputs) == {"report.json", "report.html", "summary.md"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is False


def test_parse_splits():
    assert parse_splits(["a/train.parquet"]) == {"data": "a/train.parquet"}
    assert parse_splits(["a/train.parquet", "s3://b/test.csv"]) == {
        "train": "a/train.parquet",
        "test": "s3://b/test.csv",
    }
    assert parse_splits(["val=file:///x.jsonl"]) == {"val": "file:///x.jsonl"}
    with pytest.raises(ValueError, match="given twice"):
        parse_splits(["a/x.csv", "b/x.csv"])


def test_cli_exit_codes(tmp_path: Path, capsys):
    clean, reference = tmp_path / "clean.parquet", tmp_path / "ref.parquet"
    write_table(example_table(400, seed=1), str(reference))
    write_table(example_table(300, seed=2), str(clean))
    schema, html = tmp_path / "schema.yaml", tmp_path / "r.html"

    # 0: clean data against the reference; writes the inferred schema and an HTML report.
    args = [str(clean), "--reference", str(reference), "--label-column", "label"]
    assert main([*args, "--write-schema", str(schema), "--report", str(html)]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert "<img" in html.read_text()

    # 1: blocking anomalies, one line each naming column, check and numbers.
    text = schema.read_text().replace(
        "- name: x\n  kind: numeric\n  dtype: float\n  min: null\n  max: null",
        "- name: x\n  kind: numeric\n  dtype: float\n  min: -1\n  max: 1",
    )
    schema.write_text(text)
    assert main([str(clean), "--schema", str(schema), "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out.splitlines()
    blocking = [line for line in out if line.startswith("BLOCKING ")]
    assert len(blocking) == 1
    assert "column=x check=out_of_range:" in blocking[0] and "outside [-1, 1]" in blocking[0]
    assert (
        json.loads((tmp_path / "r.json").read_text())["checks"]["out_of_range"]["verdict"] == "fail"
    )

    # 1: an unreadable data file is an anomaly, not a traceback.
    (tmp_path / "cut.parquet").write_bytes(b"PAR1\x00\x00")
    assert main([str(tmp_path / "cut.parquet")]) == 1
    assert "check=unreadable" in capsys.readouterr().out

    # 2: usage errors.
    assert main([]) == 2
    assert main([str(clean), "--bogus"]) == 2
    (tmp_path / "bad.yaml").write_text(
        "version: 1\ncolumns:\n- {name: x, kind: numeric, dtype: flt}\n"
    )
    assert main([str(clean), "--schema", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "key `columns[0] (x).dtype`" in err
    assert main([str(clean), "--schema", str(tmp_path / "missing.yaml")]) == 2
    assert main([str(clean), "--reference", str(tmp_path / "nope.parquet")]) == 2
    assert main([str(clean), "--label-column", "nope"]) == 2
    assert "label column 'nope' is not in the data" in capsys.readouterr().err


def test_cli_digits(capsys):
    assert main(["digits", "--label-column", "label", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
