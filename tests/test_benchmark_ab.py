"""experiments.benchmarks.ab: alternating A/B of the runner's train step, tiny sizes only."""

import pathlib
import re
import subprocess
import sys

import pytest

from experiments.benchmarks import ab, scan

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = scan.SIZES[8]


def test_summary_is_relative_to_the_first_variant():
    rows = ab.summarize({"a": [1.0, 2.0, 1.0], "b": [2.0, 2.0, 3.0]})
    assert [row["variant"] for row in rows] == ["a", "b"]
    assert rows[0]["ratio_to_first"] == 1.0
    # Per-round ratios 2, 1, 3: median 2 (not the ratio of the medians, 2 / 1 = 2 by chance).
    assert rows[1]["ratio_to_first"] == 2.0 and rows[1]["ratio_q25"] == 1.5
    assert rows[1]["median_ms"] == 2000.0 and rows[1]["rounds"] == 3


def test_compiler_option_variants_run_the_same_step():
    variants = ab.compiler_option_variants(
        "pixelcnn", TINY, {"default": None, "O1": {"xla_backend_optimization_level": 1}}
    )
    assert [v.name for v in variants] == ["default", "O1"]
    assert variants[0].first_loss == pytest.approx(variants[1].first_loss, rel=1e-6)
    times = ab.alternate(variants, rounds=3, warmup=1)
    assert {name: len(samples) for name, samples in times.items()} == {"default": 3, "O1": 3}
    assert all(t > 0 for samples in times.values() for t in samples)


def test_schedule_variants_train_the_same_parameters():
    variants = ab.schedule_variants("row_lstm", TINY, ["throughput", "latency"])
    assert [v.name for v in variants] == ["throughput", "latency"]
    assert variants[0].first_loss == pytest.approx(variants[1].first_loss, rel=1e-5)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_a_revision_is_exported_under_its_own_name_and_trains(tmp_path):
    name = ab.export_revision("HEAD", REPO, tmp_path)
    assert name.startswith("pixel_rnn_jax_") and (tmp_path / name / "models").is_dir()
    sources = "".join(p.read_text() for p in (tmp_path / name).rglob("*.py"))
    assert not re.search(r"\bpixel_rnn_jax\b", sources)  # every self-import renamed
    variants = ab.revision_variants("pixelcnn", TINY, "HEAD", REPO, tmp_path)
    assert [v.name for v in variants] == [name, "pixel_rnn_jax"]
    # HEAD and the working tree build the same model from the same seed.
    assert variants[0].first_loss == pytest.approx(variants[1].first_loss, rel=1e-5)


def test_the_command_needs_exactly_one_kind_of_variant():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.ab", "--size=8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PIXEL_RNN_HUGE_PAGES": "0", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "exactly one of --base=REVISION, --compiler_options=JSON or --schedules=LIST"
        in result.stderr
    )
