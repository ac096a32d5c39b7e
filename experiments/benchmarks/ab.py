"""A/B comparisons of the runner's train step, in one process, the variants' calls alternating.

On a machine whose speed drifts over minutes (a shared VM: the same step measured minutes
apart can differ by 2x), medians taken one variant after the other compare the minutes, not
the variants. Here every variant is compiled first; then the calls go A, B, A, B, ... and
each variant is reported as the median of its per-round ratio to the first variant, with
quartiles, so slow drift hits every variant alike.

Three kinds of variant:
- compiler options: the same program compiled with different `compiler_options`
  (`compiler_option_variants`);
- schedules: the same model and parameters under each `config.model.schedule`
  (`schedule_variants`);
- code revisions: the `pixel_rnn_jax` package of a git revision, exported beside the working
  tree under another name (`export_revision`), against the working tree's own
  (`revision_variants`). Only the library is exported; the step is built by each package's
  own `train.make_train_step`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import pathlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.benchmarks import runner_step, scan
from pixel_rnn_jax import models

PACKAGE = "pixel_rnn_jax"


@dataclasses.dataclass
class Variant:
    """One compiled program ready to run: `call()` runs it once and blocks on the result."""

    name: str
    call: Callable[[], None]
    compile_s: float
    first_loss: float


def _images(size: scan.SizeSpec, batch_size: int, seed: int = 0) -> np.ndarray:
    shape = (batch_size, size.image_size, size.image_size, size.num_channels)
    return np.asarray(jax.random.randint(jax.random.PRNGKey(seed), shape, 0, size.num_levels))


def _compiled_variant(name, step, state, batch, key, compiler_options=None) -> Variant:
    """The train step compiled, run once (its loss kept), carrying its donated state."""
    start = time.perf_counter()
    compiled = step.lower(state, batch, key).compile(compiler_options=compiler_options)
    compile_s = time.perf_counter() - start
    carried = list(compiled(state, batch, key))

    def call():
        carried[0], metrics = compiled(carried[0], batch, key)
        jax.block_until_ready(metrics)

    return Variant(name, call, compile_s, float(carried[1]["loss"]))


def compiler_option_variants(
    model_name: str, size: scan.SizeSpec, options: Mapping[str, Mapping[str, Any] | None]
) -> list[Variant]:
    """The runner's train step of `model_name` compiled once per entry of `options`.

    Args:
      model_name: 'row_lstm', 'diagonal_bilstm' or 'pixelcnn'.
      size: `scan.SIZES[...]`.
      options: variant name -> XLA compiler options (None or {}: the step's own).
    """
    built = models.build_model(scan.model_config(model_name, size, 1))
    images = _images(size, size.batch_size)
    variants = []
    for name, opts in options.items():
        step, state, batch, key = runner_step.runner_train_step(built, size.num_levels, images)
        variants.append(_compiled_variant(name, step, state, batch, key, dict(opts or {}) or None))
    return variants


def schedule_variants(
    model_name: str, size: scan.SizeSpec, schedules: Sequence[str]
) -> list[Variant]:
    """The runner's train step of `model_name` under each of `schedules` (the first: reference).

    The same seed gives the same parameters under every schedule, so the first losses agree.
    """
    images = _images(size, size.batch_size)
    variants = []
    for schedule in schedules:
        built = models.build_model(scan.model_config(model_name, size, 1, schedule=schedule))
        step, state, batch, key = runner_step.runner_train_step(built, size.num_levels, images)
        variants.append(_compiled_variant(schedule, step, state, batch, key))
    return variants


def export_revision(revision: str, repo: pathlib.Path, dest: pathlib.Path) -> str:
    """Writes `pixel_rnn_jax` as of git `revision` into `dest` under a new package name.

    The package's absolute imports of itself are renamed, so both packages import side by
    side. Returns the new package name (`dest` must go on `sys.path`).
    """
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    name = f"{PACKAGE}_{commit}"
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, PACKAGE],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory() as staging:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        pattern = re.compile(rf"\b{PACKAGE}\b")
        for path in pathlib.Path(staging, PACKAGE).rglob("*.py"):
            target = dest / name / path.relative_to(pathlib.Path(staging, PACKAGE))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(pattern.sub(name, path.read_text()))
    return name


def _package_step(package: str, model_name: str, size: scan.SizeSpec) -> Variant:
    """`package`'s own train step (its models, optimiser and `make_train_step`)."""
    from tensorflow_datasets.core import registered  # noqa: PLC0415

    package_models = importlib.import_module(f"{package}.models")
    parallel = importlib.import_module(f"{package}.parallel")
    # Both packages define the same TFDS builders; the second definition must not register.
    with registered.skip_registration():
        train = importlib.import_module(f"{package}.train")
    # The revision's own defaults, with the benchmark's size and model fields on top.
    fields = package_models.default_model_config().to_dict()
    fields.update(
        {
            key: value
            for key, value in scan.model_config(model_name, size, 1).to_dict().items()
            if key in fields
        }
    )
    model = package_models.build_model(ml_collections.ConfigDict(fields))
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = train.make_optimizer(ml_collections.ConfigDict(runner_step.OPTIMIZER))
    shape = (size.image_size, size.image_size, size.num_channels)
    init = functools.partial(train.init_train_state, model=model, tx=tx, image_shape=shape)
    state = jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(jax.random.PRNGKey(1))
    batch = parallel.shard_batch({"image": _images(size, size.batch_size).astype(np.int32)}, mesh)
    key = parallel.replicate(jax.random.PRNGKey(2), mesh)
    step = train.make_train_step(model, tx, size.num_levels, mesh)
    return _compiled_variant(package, step, state, batch, key)


def revision_variants(
    model_name: str, size: scan.SizeSpec, revision: str, repo: pathlib.Path, workdir: pathlib.Path
) -> list[Variant]:
    """[the step at git `revision`, the working tree's step] for `model_name`."""
    base = export_revision(revision, repo, workdir)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    return [_package_step(base, model_name, size), _package_step(PACKAGE, model_name, size)]


def alternate(variants: Sequence[Variant], rounds: int, warmup: int = 2) -> dict[str, list]:
    """Runs `warmup` untimed rounds, then `rounds` timed ones (each variant once per round).

    Returns:
      variant name -> its `rounds` call times in seconds, in round order.
    """
    for _ in range(warmup):
        for variant in variants:
            variant.call()
    times = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            start = time.perf_counter()
            variant.call()
            times[variant.name].append(time.perf_counter() - start)
    return times


def summarize(times: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """Per variant: median ms, and the median and quartiles of its per-round ratio to the first."""
    names = list(times)
    reference = times[names[0]]
    rows = []
    for name in names:
        ratios = np.asarray(times[name]) / np.asarray(reference)
        q25, median, q75 = np.percentile(ratios, [25, 50, 75])
        rows.append(
            {
                "variant": name,
                "median_ms": 1e3 * statistics.median(times[name]),
                "ratio_to_first": float(median),
                "ratio_q25": float(q25),
                "ratio_q75": float(q75),
                "rounds": len(times[name]),
            }
        )
    return rows
