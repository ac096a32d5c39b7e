"""metrics.jsonl, TensorBoard files, PNG grids and the progress bar."""

import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from pixel_rnn_jax import metric_logging


def test_scalars_go_to_jsonl_and_tensorboard(tmp_path):
    writer = metric_logging.MetricWriter(str(tmp_path))
    writer.write_scalars(1, {"train/loss": np.float32(2.5), "images_per_sec": 10.0})
    writer.write_scalars(2, {"train/loss": float("nan")})
    writer.write_scalars(3, {"eval/nll": 1.0})
    writer.truncate_after(2)  # a run resumed from step 2 rewrites step 3
    writer.close()
    rows = metric_logging.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0] == {"step": 1, "train/loss": 2.5, "images_per_sec": 10.0}
    assert math.isnan(rows[1]["train/loss"])
    events = os.listdir(tmp_path / metric_logging.TENSORBOARD_DIR)
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_disabled_writer_writes_nothing(tmp_path):
    writer = metric_logging.MetricWriter(str(tmp_path), enabled=False)
    writer.write_scalars(1, {"train/loss": 1.0})
    assert writer.write_image(1, "samples", np.zeros((4, 4, 1), np.uint8)) is None
    writer.close()
    assert os.listdir(tmp_path) == []


def test_grid_png_round_trip(tmp_path):
    images = metric_logging.to_uint8(np.arange(5 * 3 * 2).reshape(5, 3, 2, 1) % 2, num_levels=2)
    assert set(np.unique(images)) == {0, 255}
    grid = metric_logging.make_grid(images, padding=1)
    assert grid.shape == (2 * 4 + 1, 3 * 3 + 1, 1)  # 5 images -> 3 columns, 2 rows
    np.testing.assert_array_equal(grid[1:4, 1:3], images[0])
    writer = metric_logging.MetricWriter(str(tmp_path))
    path = writer.write_image(7, "samples", grid)
    writer.close()
    assert path.endswith("samples_00000007.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid[..., 0])


def test_grid_upscales_each_pixel_to_a_block_and_keeps_thin_separators():
    images = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3, 1) * 10  # two 2x3 images
    grid = metric_logging.make_grid(images, num_columns=2, padding=1, scale=3)
    assert grid.shape == (1 + 3 * 2 + 1, 1 + 2 * (3 * 3 + 1), 1)
    first = grid[1:7, 1:10, 0]  # the first image, every pixel a 3x3 block
    np.testing.assert_array_equal(first, np.kron(images[0, :, :, 0], np.ones((3, 3), np.uint8)))
    assert (grid[:, 10, 0] == 128).all()  # the separator between the two stays 1 pixel
    with pytest.raises(ValueError, match="scale"):
        metric_logging.make_grid(images, scale=0)


def test_completion_panels_hide_the_bottom_half_of_the_given_image():
    originals = np.full((2, 4, 4, 3), 7, np.uint8)
    completions = np.full((2, 4, 4, 3), 9, np.uint8)
    panels = metric_logging.completion_panels(originals, completions, given_rows=2, padding=1)
    assert panels.shape == (2, 4, 14, 3)
    assert (panels[:, :2, :4] == 7).all() and (panels[:, 2:, :4] == 128).all()
    assert (panels[:, :, 5:9] == 9).all() and (panels[:, :, 10:] == 7).all()


def test_progress_bar_only_on_a_terminal():
    stream = io.StringIO()  # not a TTY
    bar = metric_logging.ProgressBar(10, stream=stream, min_interval=0)
    bar.update(5)
    bar.clear()
    assert stream.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    bar = metric_logging.ProgressBar(10, stream=terminal, min_interval=0)
    bar.update(5, "loss 1.00")
    assert "5/10 loss 1.00" in terminal.getvalue()


def test_format_duration():
    assert metric_logging.format_duration(3723) == "1:02:03"
    assert metric_logging.format_duration(float("nan")) == "?"
