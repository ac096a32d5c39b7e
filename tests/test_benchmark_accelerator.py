"""`python -m experiments.benchmark --suite=accelerator` at its tiny (CPU) sizes: every section."""

import json

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import benchmark
from experiments.benchmarks import accelerator


@pytest.fixture(autouse=True, scope="module")
def parsed_flags():
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["benchmark"])


def test_tiny_accelerator_suite_writes_every_section(tmp_path):
    with flagsaver.flagsaver(output=str(tmp_path), name="acc", suite="accelerator", tiny=True):
        benchmark.main(["benchmark"])
    result = json.loads((tmp_path / "acc.json").read_text())
    sections = result["sections"]
    assert list(sections) == list(accelerator.SECTIONS)
    for name, section in sections.items():
        assert section["status"] in ("PASS", "measured"), (name, section["status"])
        assert section["rows"], name
    assert {r["dtype"] for r in sections["scan"]["rows"]} == set(accelerator.TINY.scan_dtypes)
    # Both schedules timed, each with its train step's loops (2 layers of 8 rows, each way).
    steps = {(r["schedule"], r["loop_trips"]) for r in sections["scan"]["rows"]}
    assert steps == {("throughput", 32), ("latency", 16)}
    assert {r["schedule"] for r in sections["equivalence"]["rows"]} == {"throughput", "latency"}
    assert {r["dtype"] for r in sections["causality"]["rows"]} == {"float32", "bfloat16"}
    assert [r["dtype"] for r in sections["precision"]["rows"]] == ["float32", "bfloat16"]
    markdown = (tmp_path / "acc.md").read_text()
    for title in accelerator.TITLES.values():
        assert f"## {title}" in markdown
    assert "Fastest (schedule, unroll)" in markdown
    assert result["header"]["tiny"] and "--suite=accelerator" in result["header"]["command"]
