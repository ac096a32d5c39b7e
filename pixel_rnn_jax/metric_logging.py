"""Run outputs: metrics.jsonl, TensorBoard event files, PNG image grids, a terminal progress bar.

Named `metric_logging` rather than `logging` so that it cannot shadow the standard library's
`logging` (which JAX, absl and Orbax import) when a script's folder lands on `sys.path`, and
so that code using both reads unambiguously.

Only process 0 of a multi-process run should write: construct `MetricWriter(...,
enabled=jax.process_index() == 0)` and every method is a no-op elsewhere.

Files under the workdir:
  metrics.jsonl       one JSON object a line: {"step": int, "train/loss": nats/image, ...}
  tensorboard/        TensorBoard event files (tensorboardX; no TensorFlow needed)
  images/<name>_<step>.png   sample and completion grids
"""

import json
import logging as std_logging
import math
import os
import sys
from collections.abc import Mapping

import numpy as np
import tqdm
from PIL import Image

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
IMAGES_DIR = "images"


def read_metrics(workdir: str) -> list[dict]:
    """Returns the rows of `workdir/metrics.jsonl` (NaN and Infinity parse as floats)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
    """Writes scalars to metrics.jsonl and TensorBoard, and image grids to PNG + TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        """Opens the writers (nothing is opened when `enabled` is False).

        Args:
          workdir: the run's work directory.
          enabled: False on every process but 0.
        """
        self.workdir = workdir
        self.enabled = enabled
        self._tb = None
        if enabled:
            os.makedirs(os.path.join(workdir, IMAGES_DIR), exist_ok=True)
            # Imported lazily: only the writing process needs it.
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=os.path.join(workdir, TENSORBOARD_DIR))

    def truncate_after(self, step: int):
        """Drops metrics.jsonl rows after `step` (a resumed run rewrites those steps)."""
        if not self.enabled:
            return
        rows = read_metrics(self.workdir)
        kept = [row for row in rows if row.get("step", 0) <= step]
        if len(kept) != len(rows):
            path = os.path.join(self.workdir, METRICS_FILE)
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in kept)
            os.replace(path + ".tmp", path)

    def write_scalars(self, step: int, scalars: Mapping[str, float]):
        """Appends `{"step": step, **scalars}` to metrics.jsonl and writes TensorBoard scalars."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _to_python(v) for k, v in scalars.items()}}
        with open(os.path.join(self.workdir, METRICS_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float):
                self._tb.add_scalar(key, value, int(step))
        self._tb.flush()

    def write_image(self, step: int, name: str, image: np.ndarray) -> str | None:
        """Writes a uint8 image `[height, width, 1 or 3]` as PNG and to TensorBoard.

        Returns:
          The PNG path (None on processes that do not write).
        """
        if not self.enabled:
            return None
        path = os.path.join(self.workdir, IMAGES_DIR, f"{name}_{int(step):08d}.png")
        save_png(path, image)
        self._tb.add_image(name, image, int(step), dataformats="HWC")
        self._tb.flush()
        return path

    def close(self):
        """Flushes and closes TensorBoard."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _to_python(value):
    value = np.asarray(value).item() if not isinstance(value, str | bool | int) else value
    return value


def to_uint8(images: np.ndarray, num_levels: int) -> np.ndarray:
    """Maps integer images in [0, num_levels) to uint8 [0, 255] for display."""
    images = np.asarray(images)
    if num_levels == 256:
        return images.astype(np.uint8)
    return (images.astype(np.int64) * 255 // (num_levels - 1)).astype(np.uint8)


def make_grid(
    images: np.ndarray, num_columns: int | None = None, padding: int = 1, scale: int = 1
) -> np.ndarray:
    """Tiles uint8 images `[n, height, width, channels]` into one `[H', W', channels]` image.

    At one screen pixel per image pixel a grid of 28x28 digits is too small to read, so the
    runner writes its grids upscaled (`train.image_scale`): every image pixel becomes a
    `scale x scale` block (nearest neighbour, no blur that would hide binarized pixels),
    while the separators stay `padding` pixels thin.

    Args:
      images: uint8 `[n, height, width, channels]`, channels 1 or 3.
      num_columns: images per row; default the smallest square that holds n.
      padding: pixels of mid-grey between tiles.
      scale: integer upscaling factor of every tile (>= 1).

    Returns:
      uint8 `[rows * (scale * height + padding) + padding,
      columns * (scale * width + padding) + padding, channels]`.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [n, height, width, 1 or 3], got {images.shape}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, height, width, channels = images.shape
    columns = num_columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        128,
        np.uint8,
    )
    for index in range(n):
        r, c = divmod(index, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = images[index]
    return grid


def completion_panels(
    originals: np.ndarray, completions: np.ndarray, given_rows: int, padding: int = 1
) -> np.ndarray:
    """Side-by-side (given top half, completion, original) for each image.

    Args:
      originals: uint8 `[n, height, width, channels]` test images.
      completions: uint8 `[n, height, width, channels]`, rows >= `given_rows` sampled.
      given_rows: rows of the original the model was given.
      padding: grey pixels between the three panels.

    Returns:
      uint8 `[n, height, 3 * width + 2 * padding, channels]`; the hidden part of the first
      panel is mid-grey.
    """
    given = np.array(originals, copy=True)
    given[:, given_rows:] = 128
    gap = np.full((*originals.shape[:2], padding, originals.shape[-1]), 128, np.uint8)
    return np.concatenate([given, gap, completions, gap, originals], axis=2)


def save_png(path: str, image: np.ndarray):
    """Writes a uint8 `[height, width, 1 or 3]` array as a PNG file."""
    image = np.asarray(image, np.uint8)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def format_duration(seconds: float) -> str:
    """'1:02:03'-style duration; '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """The training progress bar: tqdm on stdout, active only when stdout is a terminal.

    A thin wrapper so that the loop can set the step directly (a resumed run starts past 0)
    and clear the bar before a log line.
    """

    def __init__(self, total: int, *, enabled: bool = True, stream=None, min_interval: float = 0.5):
        """Creates the bar.

        Args:
          total: the step the run ends at.
          enabled: False on processes other than 0.
          stream: output stream (default sys.stdout); the bar is off unless it is a TTY.
          min_interval: seconds between redraws.
        """
        stream = stream or sys.stdout
        active = enabled and hasattr(stream, "isatty") and stream.isatty()
        self._bar = tqdm.tqdm(
            total=max(1, total),
            file=stream,
            disable=not active,
            mininterval=min_interval,
            leave=False,
            unit="step",
            dynamic_ncols=True,
            bar_format=(
                "{percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} {desc} "
                "[{elapsed}<{remaining}, {rate_fmt}]"
            ),
        )

    def update(self, step: int, suffix: str = ""):
        """Moves the bar to `step` with `suffix` (e.g. the loss) after the count."""
        self._bar.set_description_str(suffix, refresh=False)
        self._bar.update(step - self._bar.n)

    def clear(self):
        """Erases the bar so that a log line starts on a clean line."""
        self._bar.clear()

    def close(self):
        """Removes the bar for good (at the end of the run)."""
        self._bar.close()


# Orbax warns on every save without metrics; the runner saves without them on purpose
# (only evaluated steps carry an eval NLL).
_EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide metrics.",)


class _DropLibraryInfo(std_logging.Filter):
    """Drops INFO/DEBUG records from the given libraries' source trees and expected warnings."""

    def __init__(self, path_fragments: tuple[str, ...]):
        super().__init__()
        self._fragments = path_fragments

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return record.getMessage() not in _EXPECTED_WARNINGS
        return not any(fragment in record.pathname for fragment in self._fragments)


def quiet_library_info_logs(libraries: tuple[str, ...] = ("orbax",)):
    """Hides the INFO lines of chatty libraries (Orbax logs ~40 per checkpoint) from absl's log.

    For entry points only: it changes the process-wide absl handler. Warnings and errors
    still pass.
    """
    from absl import logging as absl_logging  # noqa: PLC0415

    fragments = tuple(f"/{name}/" for name in libraries)
    absl_logging.get_absl_handler().addFilter(_DropLibraryInfo(fragments))
