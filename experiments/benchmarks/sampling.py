"""Sampling speed: the naive and the cached sampler for every model kind, size and batch.

`benchmark_sampling(...)` returns one row per case; `experiments/benchmark.py --suite=sampling`
writes them as JSON and Markdown. Every row is a full sampling call (`start=0`) of the jitted
sampler of `sampling.JITTED_SAMPLERS`: compile time apart (`.lower().compile()`), then the
median of repeated calls after a warm-up call, each ended by `block_until_ready`.

The naive sampler runs one full forward pass per position, so its cost per position is the
same at every position; where a full run would take longer than `naive_full_budget_s` it is
timed on the image's last `naive_positions` positions (`start = total - n`, same compiled
program) and scaled by `total / n`, and the row says so in its `timed` column.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import tqdm

from experiments.benchmarks import scan
from pixel_rnn_jax import models, sampling

MODEL_NAMES = ("row_lstm", "diagonal_bilstm", "pixelcnn")


@dataclasses.dataclass(frozen=True)
class SamplingCase:
    """One benchmark row: a model kind, a sampler, an image shape and a batch."""

    model: str  # 'row_lstm', 'diagonal_bilstm' or 'pixelcnn'
    method: str  # 'naive' or 'cached'
    height: int
    width: int
    channels: int  # 1 (binarized) or 3 (RGB)
    levels: int  # 2 (binarized) or 256
    batch: int


def model_config(case: SamplingCase, overrides: dict[str, Any] | None = None):
    """`models.default_model_config()` (7 layers, h=16, the MNIST model) for the case's data.

    `overrides` replace model fields (e.g. a smaller model for tests).
    """
    config = models.default_model_config()
    config.name = case.model
    config.num_channels = case.channels
    config.num_levels = case.levels
    config.update(overrides or {})
    return config


def default_cases(
    quick: bool = False, model_names: Sequence[str] = MODEL_NAMES
) -> list[SamplingCase]:
    """The issue's table, naive rows before the cached rows they are compared with.

    Both methods at 28x28 binarized and 32x32x3 with 256 levels, batch 1 and 64; then the
    cached sampler alone at 16x16, 32x32 and 64x64 (binarized, batch 64), whose time per
    pixel should not grow with the image. `quick`: the 28x28 rows only.
    """
    shapes = [(28, 1, 2)] if quick else [(28, 1, 2), (32, 3, 256)]
    cases = [
        SamplingCase(name, method, size, size, channels, levels, batch)
        for size, channels, levels in shapes
        for batch in (1, 64)
        for name in model_names
        for method in ("naive", "cached")
    ]
    if not quick:
        cases += [
            SamplingCase(name, "cached", size, size, 1, 2, 64)
            for name in model_names
            for size in (16, 32, 64)
        ]
    return cases


def benchmark_case(
    case: SamplingCase,
    *,
    repeats: int = 3,
    naive_positions: int = 8,
    naive_full_budget_s: float = 10.0,
    seed: int = 0,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Times one case; see the module docstring for what is timed. Returns a row."""
    config = model_config(case, model_overrides)
    model = models.build_model(config)
    images = jnp.zeros((case.batch, case.height, case.width, case.channels), jnp.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), images[:1])
    rng = jax.random.PRNGKey(seed + 1)
    temperature = jnp.float32(1.0)
    total = case.height * case.width * case.channels
    jitted = sampling.JITTED_SAMPLERS[case.method]
    compiled, compile_s = scan.compile_timed(
        jitted, model, variables, rng, images, jnp.int32(0), temperature
    )

    def run_from(start: int) -> Callable[[], jax.Array]:
        start = jnp.int32(start)
        return lambda: compiled(variables, rng, images, start, temperature)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    scale, timed = 1.0, "full"
    if case.method == "naive":
        positions = min(naive_positions, total)
        # Warm up on one position: a naive position costs the same wherever it is.
        jax.block_until_ready(run_from(total - 1)())
        timing = scan.time_calls(run_from(total - positions), repeats, warmup=0)
        if positions < total and timing.median * total / positions > naive_full_budget_s:
            scale = total / positions
            timed = f"last {positions} of {total} positions, x{scale:.3g}"
        else:
            timing = scan.time_calls(run_from(0), repeats, warmup=0)
    else:
        timing = scan.time_calls(run_from(0), repeats, warmup=1)
    seconds = timing.median * scale
    return {
        "model": case.model,
        "method": case.method,
        "image": f"{case.height}x{case.width}x{case.channels}",
        "levels": case.levels,
        "batch": case.batch,
        "compile_s": round(compile_s, 2),
        "time_s": _round(seconds),
        "time_range_s": f"{_round(timing.min * scale)}-{_round(timing.max * scale)}",
        "samples_per_s": _round(case.batch / seconds),
        "pixels_per_s": _round(case.batch * case.height * case.width / seconds),
        "speedup": "",  # cached rows: naive time_s / cached time_s (filled in afterwards)
        "timed": timed,
        "repeats": timing.repeats,
        "load_1m": None if load is None else round(load, 1),
    }


def add_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fills `speedup` of every cached row that has a naive row of the same model/image/batch."""
    naive = {
        (r["model"], r["image"], r["levels"], r["batch"]): r["time_s"]
        for r in rows
        if r["method"] == "naive"
    }
    for row in rows:
        key = (row["model"], row["image"], row["levels"], row["batch"])
        if row["method"] == "cached" and key in naive:
            row["speedup"] = f"{naive[key] / row['time_s']:.0f}x"
    return rows


def benchmark_sampling(
    quick: bool = False,
    log: Callable[..., None] = print,
    *,
    cases: Sequence[SamplingCase] | None = None,
    model_names: Sequence[str] = MODEL_NAMES,
    repeats: int | None = None,
    naive_positions: int | None = None,
    naive_full_budget_s: float = 10.0,
    seed: int = 0,
    model_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs the sampling benchmark; one row (a dict, same keys in every row) per case.

    Args:
      quick: 28x28 rows only, 2 repeats, naive timed on 4 positions (a couple of minutes).
      log: progress messages, e.g. `absl.logging.info`; called with a %-format and args.
      cases: what to run; default `default_cases(quick, model_names)`.
      model_names: model kinds of the default cases.
      repeats: timed calls per row after the warm-up (default 2 quick, else 3).
      naive_positions: positions a naive row is timed on when a full run would exceed
        `naive_full_budget_s` (default 4 quick, else 8).
      naive_full_budget_s: naive rows estimated to take longer than this are extrapolated.
      seed: parameter and sampling seed.
      model_overrides: model config fields to change from `models.default_model_config()`.

    Returns:
      Rows with the model, method, image, batch, compile seconds, median seconds per call
      (`time_s`, for the whole batch) and its range, samples/s, pixels/s, the cached rows'
      speedup over the naive row of the same case, how the row was timed, and the 1-minute
      load average when it started (the machine may be shared).
    """
    cases = default_cases(quick, model_names) if cases is None else list(cases)
    repeats = repeats or (2 if quick else 3)
    naive_positions = naive_positions or (4 if quick else 8)
    rows = []
    bar = tqdm.tqdm(cases, desc="sampling suite", unit="case", disable=None)  # on a TTY
    for index, case in enumerate(bar):
        log("sampling benchmark %d/%d: %s", index + 1, len(cases), case)
        row = benchmark_case(
            case,
            repeats=repeats,
            naive_positions=naive_positions,
            naive_full_budget_s=naive_full_budget_s,
            seed=seed,
            model_overrides=model_overrides,
        )
        log("  %.4g s, %.4g samples/s (%s)", row["time_s"], row["samples_per_s"], row["timed"])
        rows.append(row)
    return add_speedups(rows)


def _round(value: float) -> float:
    """Four significant digits: enough for timings on a shared machine."""
    return float(f"{value:.4g}")
