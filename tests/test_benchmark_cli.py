"""`python -m experiments.benchmark` end to end on the smoke size: files and rows."""

import json

import pytest
from absl import app, flags
from absl.testing import flagsaver

from experiments import benchmark


@pytest.fixture(autouse=True, scope="module")
def parsed_flags():
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["benchmark"])


def test_scan_suite_writes_json_and_markdown_with_the_expected_rows(tmp_path):
    with flagsaver.flagsaver(
        output=str(tmp_path),
        name="smoke",
        models=["row_lstm"],
        sizes=["8"],
        unroll=["1", "full"],
        schedules=["throughput", "latency"],
        repeats=1,
        peak_size=256,
        # Smoke 'full': 2 layers x 8 rows > 10: skipped.
        max_unrolled_steps=10,
    ):
        benchmark.main(["benchmark"])
    result = json.loads((tmp_path / "smoke.json").read_text())
    header, rows = result["header"], result["rows"]
    assert header["machine"]["device_kind"]
    assert header["matmul_peak"]["gflops"] > 0
    assert "--sizes=8" in header["command"]
    assert "--schedules=throughput,latency" in header["command"]
    keys = [(r["model"], r["schedule"], r["unroll"], "skipped" in r) for r in rows]
    assert keys == [
        ("row_lstm", "throughput", "1", False),
        ("row_lstm", "throughput", "full", True),
        ("row_lstm", "latency", "1", False),
        ("row_lstm", "latency", "full", True),
    ]
    # Loop trips of the smoke train step: 2 layers x 8 rows, or 8 rows, each way; the rows
    # are as many dependent steps.
    steps = [
        (r["loop_trips"], r["loops"], r["dependent_steps"]) for r in rows if "skipped" not in r
    ]
    assert steps == [(32, 4, 32), (16, 2, 16)]
    for row in rows:
        if "skipped" not in row:
            assert row["train_images_per_s"] > 0 and row["forward"]["repeats"] == 1
            assert row["train_memory"]["peak_bytes"] > 0
            assert row["train_fraction_of_peak"] > 0
    markdown = (tmp_path / "smoke.md").read_text()
    assert f"Device kind: **{header['machine']['device_kind']}**" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) == 1 + len(rows)  # header line + one line per row
    assert "max_unrolled_steps" in markdown


def test_unknown_model_and_missing_suites_are_usage_errors(tmp_path):
    bad_model = flagsaver.flagsaver(output=str(tmp_path), models=["pixel_lstm"], sizes=["8"])
    with bad_model, pytest.raises(app.UsageError, match="unknown"):
        benchmark.main(["benchmark"])
