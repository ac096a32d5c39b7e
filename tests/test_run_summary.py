"""Tests of a run's summary (experiments.run_summary) on a generated metrics.jsonl."""

import json

import pytest
from PIL import Image

from experiments import run_summary
from pixel_rnn_jax import errors


def test_summary_files_from_metrics_and_grids(tmp_path):
    workdir, output = tmp_path / "run", tmp_path / "out"
    (workdir / "images").mkdir(parents=True)
    rows = [{"step": s, "train/bits_per_dim": 4.0 - s / 1000} for s in (500, 1000, 1500, 2000)]
    rows.insert(2, {"step": 1000, "eval/bits_per_dim": 3.2})
    rows.append({"step": 2000, "eval/bits_per_dim": 2.1, "test/bits_per_dim": 2.2})
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for step in (1000, 2000):
        Image.new("L", (8, 8), step // 10).save(workdir / "images" / f"samples_{step:06d}.png")
    written = run_summary.write_summary(str(workdir), str(output))
    assert written == ["curve.md", "curve.png", "final.json", "samples.png"]
    table = (output / "curve.md").read_text().splitlines()
    assert table[2:] == ["| 1000 | 3.0000 | 3.2000 |", "| 2000 | 2.0000 | 2.1000 |"]
    assert json.loads((output / "final.json").read_text())["test/bits_per_dim"] == 2.2
    assert Image.open(output / "samples.png").getpixel((0, 0)) == 200  # the last grid
    assert Image.open(output / "curve.png").size[0] > 400


def test_a_directory_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(errors.UserError, match="metrics.jsonl does not exist"):
        run_summary.write_summary(str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
