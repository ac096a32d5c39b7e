"""`python -m experiments.compress` and `experiments.decompress` end to end on a smoke run."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments.benchmarks import compression
from pixel_rnn_jax import train
from pixel_rnn_jax.coding import container

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "row_lstm_mnist_smoke"


@pytest.fixture(scope="module")
def run(smoke_run):
    """A 2-step smoke run's workdir and the config it was trained with."""
    return smoke_run(CONFIG)


def _cli(module, cache, *flags):
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
    command = [sys.executable, "-m", f"experiments.{module}", f"--config={CONFIG}", *flags]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def test_compress_report_then_decompress_a_directory_with_a_truncated_file(run, tmp_path):
    workdir, config, cache = run
    out, pngs = tmp_path / "prnn", tmp_path / "png"
    result = _cli(
        "compress", cache, f"--workdir={workdir}", "--split=test", "--num=3", f"--output={out}"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    names = [f"test_{index:05d}.prnn" for index in range(3)]
    assert [entry["name"] for entry in report["files"]] == names
    for entry in report["files"]:
        assert entry["bytes"] == (out / entry["name"]).stat().st_size
        assert entry["bytes"] - entry["header_bytes"] <= entry["nll_bits"] / 8 + 4
    assert report["totals"]["bytes"] == sum(entry["bytes"] for entry in report["files"])

    (out / names[1]).write_bytes((out / names[1]).read_bytes()[:-2])  # truncated
    # Issue 29: the header's width changed to 100000 asked XLA for 301 GB; now one line.
    header, payload = container.unpack((out / names[2]).read_bytes())
    forged = container.pack(dataclasses.replace(header, width=100_000), payload)
    (out / "wide.prnn").write_bytes(forged)
    result = _cli("decompress", cache, f"--workdir={workdir}", f"--input={out}", f"--output={pngs}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: 2 of 4 files could not be decoded") and names[1] in error
    assert "wide.prnn: malformed header: an image of 28x100000x1, the model takes 28x28x1" in error
    assert sorted(os.listdir(pngs)) == ["test_00000.png", "test_00002.png"]
    spec = train.load_checkpoint(config, workdir).spec
    images, _ = train.split_images(config, spec, "test", 3)
    for index in (0, 2):
        decoded = np.asarray(Image.open(pngs / f"test_{index:05d}.png"))
        np.testing.assert_array_equal(decoded, images[index, ..., 0].astype(np.uint8) * 255)


def test_benchmark_suite_rows_on_the_trained_run(run):
    workdir, _, _ = run
    header, rows = compression.run_suite(
        [CONFIG], [workdir], which="latest", num=3, log=lambda _: None
    )
    methods = [row["method"] for row in rows]
    assert methods[:3] == ["model NLL", ".prnn payload (no header)", ".prnn file (header included)"]
    assert set(methods[3:]) == {*compression.CODECS, *compression.BINARY_CODECS}
    files_row = rows[2]
    assert files_row["exact"] and files_row["images"] == 3
    # (The payload can be below the NLL: a stream's final zero bytes are not stored, and the
    # zeros the decoder reads instead code a final run of level 0 (background) for free.)
    assert files_row["per_image"] > rows[1]["per_image"] > 0
    assert files_row["jpegxl_per_image_ratio"] > 0 and files_row["decode_images_per_s"] > 0
    assert all(row["tiled"] > 0 for row in rows[3:])
    assert compression.tile(np.zeros((1000, 28, 28, 1))).shape == (700, 1120, 1)
