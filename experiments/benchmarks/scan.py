"""Timing, memory and FLOP accounting for the scan-vs-unrolled benchmark.

`experiments/benchmark.py` is the entry point; this module holds the pieces, each usable on
its own:

- `compile_timed` / `time_calls`: compile time, and the median and spread (min, max, IQR)
  of repeated timed calls after warm-up, each call ended by `block_until_ready`.
- `memory_stats`: sizes from the compiled executable's `memory_analysis()`.
- `model_flops_per_image`: analytic forward FLOPs of a model config. XLA's
  `cost_analysis()` counts a while loop's body once, not once per trip (measured in
  tests/test_benchmarking.py), so it undercounts every scan except a fully unrolled one.
- `matmul_peak`: the achieved FLOP/s of a large float32 matmul, the ceiling rows are
  compared with.
- `benchmark_scan`: the scan suite itself (rows of compile time, forward time,
  forward+backward+update time, memory, images/s, FLOP/s and the train step's loop trips,
  loops and dependent steps (`loops.count_loops`) per model, size, schedule and unroll).
- `write_json` / `write_markdown`: the result files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from experiments.benchmarks import loops, runner_step
from experiments.targets import estimate
from pixel_rnn_jax import models, parallel
from pixel_rnn_jax.nn import masks, recurrence
from pixel_rnn_jax.nn.lstm_cell import NUM_GATES

# ---------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls (after warm-up)."""

    median: float
    min: float
    max: float
    q25: float  # 25th percentile
    q75: float  # 75th percentile
    repeats: int

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Timing:
        values = np.asarray(samples, dtype=np.float64)
        if values.size == 0:
            raise ValueError("Timing needs at least one sample.")
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        return cls(
            float(median),
            float(values.min()),
            float(values.max()),
            float(q25),
            float(q75),
            len(values),
        )


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Times `fn()` `repeats` times after `warmup` untimed calls.

    Every call is ended with `jax.block_until_ready` on its result, so asynchronous
    dispatch does not hide the computation.

    Args:
      fn: a no-argument callable returning arrays (or a pytree of them).
      repeats: timed calls (>= 1).
      warmup: untimed calls first (caches, thread pools, first-touch of buffers).

    Returns:
      The Timing of the timed calls.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
    return Timing.from_samples(samples)


def compile_timed(jitted: Any, *args: Any) -> tuple[Any, float]:
    """`jitted.lower(*args).compile()` and the seconds it took (trace + lower + compile).

    On a GPU the compiler also writes its per-fusion time estimates into the program
    (`estimate.GPU_COMPILER_OPTIONS`: annotations, the same code), so that each measured row
    can show the estimate beside it.
    """
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    gpu = jax.default_backend() == "gpu"
    compiled = lowered.compile(estimate.GPU_COMPILER_OPTIONS) if gpu else lowered.compile()
    return compiled, time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# Memory and XLA's own cost model


def memory_stats(compiled: Any) -> dict[str, int] | None:
    """Byte sizes from `compiled.memory_analysis()`, or None where the backend has none.

    On CPU (jax 0.10.2) the analysis gives argument, output, alias (donated inputs reused as
    outputs) and temp sizes; `peak_bytes` = argument + output + temp - alias is the most the
    executable holds at once by that account (XLA's buffer assignment, not the allocator).
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    stats = {
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "alias_bytes": int(analysis.alias_size_in_bytes),
        "temp_bytes": int(analysis.temp_size_in_bytes),
    }
    stats["peak_bytes"] = (
        stats["argument_bytes"] + stats["output_bytes"] + stats["temp_bytes"] - stats["alias_bytes"]
    )
    return stats


def xla_flops(compiled: Any) -> float | None:
    """FLOPs by XLA's `cost_analysis()`; a while loop's body is counted once, not per trip."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax returned one dict per device
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


# ---------------------------------------------------------------------------------------
# Analytic FLOPs


def _masked_kernel_flops(kernel_shape, mask_type, num_groups, num_gates=1) -> int:
    """2 x the nonzero entries of a masked kernel: FLOPs per output pixel."""
    return 2 * int(
        np.count_nonzero(masks.kernel_mask(kernel_shape, mask_type, num_groups, num_gates))
    )


def model_flops_per_pixel(config: ml_collections.ConfigDict) -> dict[str, int]:
    """Forward FLOPs per pixel of `models.build_model(config)`, by part.

    Counts 2 FLOPs per multiply-add of every convolution and matmul, with masked kernels
    counted by their nonzero entries (the arithmetic the model needs, not what an
    implementation spends on zeros or on the Diagonal BiLSTM's skew padding). Elementwise
    work (gates, residual adds, ReLUs, the softmax) is left out: it is a few percent.
    Edge pixels are counted like interior ones.

    Args:
      config: a model config with the fields of `models.default_model_config()`.

    Returns:
      {'input_conv', 'body', 'skips', 'output_stack', 'total'} FLOPs per pixel.
    """
    h, c, groups = config.hidden_dim, config.num_channels, config.num_channels
    k = config.first_kernel_size
    parts = {"input_conv": _masked_kernel_flops((k, k, c, 2 * h), "A", groups)}
    output_1x1 = _masked_kernel_flops((1, 1, h, 2 * h), "B", groups)
    if config.name == "row_lstm":
        kr = config.recurrent_kernel_size
        unit = (
            _masked_kernel_flops((1, kr, 2 * h, NUM_GATES * h), "B", groups, NUM_GATES)
            + 2 * kr * h * NUM_GATES * h  # state-to-state k x 1, unmasked
            + output_1x1
        )
    elif config.name == "diagonal_bilstm":
        per_direction = (
            _masked_kernel_flops((1, 1, 2 * h, NUM_GATES * h), "B", groups, NUM_GATES)
            + 2 * 2 * h * NUM_GATES * h  # state-to-state 2 x 1, unmasked
        )
        context = 2 * c * NUM_GATES * h if config.full_context else 0
        unit = 2 * per_direction + context + output_1x1
    elif config.name == "pixelcnn":
        kr = config.recurrent_kernel_size
        unit = (
            _masked_kernel_flops((1, 1, 2 * h, h), "B", groups)
            + _masked_kernel_flops((kr, kr, h, h), "B", groups)
            + _masked_kernel_flops((1, 1, h, 2 * h), "B", groups)
        )
    else:
        raise ValueError(f"No FLOP count for model {config.name!r}.")
    parts["body"] = config.num_layers * unit
    skip = _masked_kernel_flops((1, 1, 2 * h, 2 * h), "B", groups)
    parts["skips"] = config.num_layers * skip if config.use_skip else 0
    logits = c * (1 if config.num_levels == 2 else config.num_levels)
    parts["output_stack"] = _masked_kernel_flops(
        (1, 1, 2 * h, config.output_dim), "B", groups
    ) + _masked_kernel_flops((1, 1, config.output_dim, logits), "B", groups)
    parts["total"] = sum(parts.values())
    return parts


def model_flops_per_image(config: ml_collections.ConfigDict, height: int, width: int) -> int:
    """Forward FLOPs of one `[height, width]` image (see `model_flops_per_pixel`)."""
    return model_flops_per_pixel(config)["total"] * height * width


# The usual accounting of a training step: the backward pass costs twice the forward
# (one product for the input gradient, one for the weight gradient, per forward product).
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


# ---------------------------------------------------------------------------------------
# The machine


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Achieved float32 FLOP/s of a `size x size` matmul: the ceiling rows are compared with.

    Returns:
      {'size', 'median_s', 'gflops' (at the median), 'best_gflops' (at the fastest call)}.
    """
    keys = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(keys[0], (size, size), jnp.float32)
    b = jax.random.normal(keys[1], (size, size), jnp.float32)
    compiled, _ = compile_timed(jax.jit(jnp.matmul), a, b)
    timing = time_calls(lambda: compiled(a, b), repeats=repeats, warmup=2)
    flops = 2.0 * size**3
    return {
        "size": size,
        "median_s": timing.median,
        "gflops": flops / timing.median / 1e9,
        "best_gflops": flops / timing.min / 1e9,
    }


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or `platform.processor()` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Device kind, platform, versions and CPU facts for a result file's header."""
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # glibc.malloc.hugetlb=1 changes CPU step times (see WORKSPACE_NOTES.md).
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------------------
# The scan suite


@dataclasses.dataclass(frozen=True)
class SizeSpec:
    """A paper-sized model/data setting, and the batch it is benchmarked with here."""

    name: str  # data set the size stands for
    image_size: int  # height = width
    num_channels: int
    num_levels: int
    hidden_dim: int  # h (PixelRNN); PixelCNN uses the same h
    recurrent_layers: int  # Row LSTM / Diagonal BiLSTM layers
    pixelcnn_layers: int
    output_dim: int
    batch_size: int  # the benchmark's default batch for this size (small for big sizes)
    note: str = ""


# MNIST is the throughput setting. CIFAR-10: 12 layers from the paper's ablation
# (Table 3), 15 PixelCNN layers from Table 1's note; h=128 and the output stack's 1024
# features are unconfirmed (the experiment configs' choices). ImageNet 64: the paper does
# not give its sizes here; we reuse the CIFAR-10 ones (unconfirmed).
SIZES: dict[int, SizeSpec] = {
    28: SizeSpec("binarized MNIST", 28, 1, 2, 16, 7, 7, 32, 16),
    32: SizeSpec(
        "CIFAR-10", 32, 3, 256, 128, 12, 15, 1024, 2, "h=128 and output_dim=1024 unconfirmed"
    ),
    64: SizeSpec(
        "ImageNet 64x64", 64, 3, 256, 128, 12, 15, 1024, 1, "sizes unconfirmed (CIFAR-10's)"
    ),
    # Not a paper size: a seconds-long setting for the tests and for trying the tool.
    8: SizeSpec("smoke test", 8, 1, 2, 4, 2, 2, 8, 2, "tiny smoke-test setting, not a paper size"),
}

MODEL_NAMES = ("row_lstm", "diagonal_bilstm", "pixelcnn")
RECURRENT_MODELS = ("row_lstm", "diagonal_bilstm")


def model_config(
    name: str,
    size: SizeSpec,
    unroll: recurrence.Unroll,
    dtype: str = "float32",
    remat: bool = False,
    schedule: str = "auto",
) -> ml_collections.ConfigDict:
    """The model config of `name` at `size` (every other field at its default)."""
    fields = models.default_model_config().to_dict()
    fields.update(
        name=name,
        num_layers=size.pixelcnn_layers if name == "pixelcnn" else size.recurrent_layers,
        hidden_dim=size.hidden_dim,
        num_levels=size.num_levels,
        num_channels=size.num_channels,
        output_dim=size.output_dim,
        unroll=unroll,
        dtype=dtype,
        remat=remat,
        schedule=schedule,
    )
    # A fresh ConfigDict: the default's `unroll` field is typed int, 'full' is a str.
    return ml_collections.ConfigDict(fields)


def recurrence_steps(name: str, size: SizeSpec) -> int:
    """Sequential steps of one layer's recurrence: rows, or skewed columns (0 for PixelCNN)."""
    if name == "row_lstm":
        return size.image_size
    if name == "diagonal_bilstm":
        return 2 * size.image_size - 1
    return 0


def benchmark_one(
    name: str,
    size: SizeSpec,
    unroll: recurrence.Unroll,
    *,
    batch_size: int,
    repeats: int,
    warmup: int = 1,
    peak_gflops: float | None = None,
    seed: int = 0,
    dtype: str = "float32",
    remat: bool = False,
    schedule: str = "auto",
) -> dict[str, Any]:
    """Benchmarks one (model, size, unroll, dtype, remat, schedule): forward, and the runner's
    train step.

    The train step is the runner's own (`runner_step.runner_train_step`): forward,
    backward, gradient clipping, RMSProp and the health metrics, on a one-device mesh.

    Returns:
      A row: compile seconds, Timing dicts, memory, images/s, FLOPs and FLOP/s.
    """
    config = model_config(name, size, unroll, dtype, remat, schedule)
    model = models.build_model(config)
    shape = (batch_size, size.image_size, size.image_size, size.num_channels)
    images = np.asarray(jax.random.randint(jax.random.PRNGKey(seed), shape, 0, size.num_levels))
    step, train_state, batch, key = runner_step.runner_train_step(
        model, size.num_levels, images, seed=seed + 1
    )
    params = train_state.params

    # Compiled as the runner's steps are (`parallel.data_parallel`), so that the ratio of
    # train step to forward compares programs built alike.
    forward = jax.jit(
        lambda p, x: model.apply({"params": p}, x),
        compiler_options=parallel.compiler_options(jax.default_backend()),
    )
    forward_compiled, forward_compile_s = compile_timed(forward, params, batch["image"])
    forward_timing = time_calls(lambda: forward_compiled(params, batch["image"]), repeats, warmup)

    train_compiled, train_compile_s = compile_timed(step, train_state, batch, key)
    train_loops = loops.count_loops(step, train_state, batch, key)
    state = [train_state]

    def train_call():
        # Donated buffers: carry the new state into the next call.
        state[0], metrics = train_compiled(state[0], batch, key)
        return metrics["loss"]

    train_timing = time_calls(train_call, repeats, warmup)

    flops_image = model_flops_per_image(config, size.image_size, size.image_size)
    train_flops_image = TRAIN_FLOPS_PER_FORWARD_FLOP * flops_image
    train_gflops = train_flops_image * batch_size / train_timing.median / 1e9
    forward_gflops = flops_image * batch_size / forward_timing.median / 1e9
    return {
        "model": name,
        "size": size.image_size,
        "data": size.name,
        "unroll": str(unroll),
        "dtype": dtype,
        "remat": remat,
        "schedule": model.schedule,  # as resolved on this backend ('auto' never)
        "batch_size": batch_size,
        "layers": config.num_layers,
        "hidden_dim": config.hidden_dim,
        "recurrence_steps": recurrence_steps(name, size),
        # The compiled train step's loops: their total trip count, forward and backward, and
        # the longest chain of recurrence steps (what a full unroll keeps).
        "loop_trips": train_loops.loop_trips,
        "loops": train_loops.loops,
        "dependent_steps": train_loops.dependent_steps,
        "forward_compile_s": forward_compile_s,
        "train_compile_s": train_compile_s,
        "forward": dataclasses.asdict(forward_timing),
        "train": dataclasses.asdict(train_timing),
        "forward_images_per_s": batch_size / forward_timing.median,
        "train_images_per_s": batch_size / train_timing.median,
        "train_memory": memory_stats(train_compiled),
        # The compiler's cost model plus the assumed launch and loop costs (None on a CPU):
        # the accelerator suite prints it beside the measured time, to recalibrate it.
        "estimated_train": estimate.executable_estimate(train_compiled, jax.devices()[0]),
        "forward_memory": memory_stats(forward_compiled),
        "model_flops_per_image": flops_image,
        "train_flops_per_image": train_flops_image,
        "xla_train_flops_per_image": _per_image(xla_flops(train_compiled), batch_size),
        "forward_gflops": forward_gflops,
        "train_gflops": train_gflops,
        "train_fraction_of_peak": train_gflops / peak_gflops if peak_gflops else None,
        "forward_fraction_of_peak": forward_gflops / peak_gflops if peak_gflops else None,
        "final_loss": float(jax.device_get(train_call())),
    }


def _per_image(flops: float | None, batch_size: int) -> float | None:
    return None if flops is None else flops / batch_size


def skip_reason(
    name: str, size: SizeSpec, unroll: recurrence.Unroll, max_unrolled_steps: int
) -> str | None:
    """Why a row is not run, or None: fully unrolled programs past the step cap."""
    if name == "pixelcnn":
        return None
    setting = recurrence.parse_unroll(unroll)
    if setting is True or setting == "python":
        model_size = size.pixelcnn_layers if name == "pixelcnn" else size.recurrent_layers
        unrolled = recurrence_steps(name, size) * model_size
        if unrolled > max_unrolled_steps:
            return (
                f"skipped: {unrolled} unrolled steps > --max_unrolled_steps={max_unrolled_steps} "
                "(compile time and memory grow with the unrolled program)"
            )
    return None


def benchmark_scan(
    model_names: Iterable[str],
    image_sizes: Iterable[int],
    unrolls: Iterable[recurrence.Unroll],
    *,
    repeats: int | None = None,
    batch_size: int | None = None,
    max_unrolled_steps: int = 400,
    time_budget_s: float | None = None,
    peak_gflops: float | None = None,
    log: Callable[[str], None] = print,
    dtypes: Sequence[str] = ("float32",),
    remats: Sequence[bool] = (False,),
    schedules: Sequence[str] = ("auto",),
) -> list[dict[str, Any]]:
    """The scan suite: one row per (model, size, schedule, unroll, dtype, remat); PixelCNN
    once per size, dtype and remat.

    Args:
      model_names: from MODEL_NAMES.
      image_sizes: keys of SIZES.
      unrolls: unroll settings for the recurrent models (see `recurrence.parse_unroll`).
      repeats: timed calls per measurement; default 5 at 28x28, 3 at 32, 2 at 64.
      batch_size: overrides each size's default batch.
      max_unrolled_steps: 'full'/'python' rows whose layers x steps exceed this are skipped
        (recorded with the reason), because their compile time would dominate the run.
      time_budget_s: once the suite has run this long, the remaining rows are recorded as
        skipped rather than run (a bound on the run time, not a deadline per row).
      peak_gflops: the matmul peak for the fraction-of-peak columns.
      log: progress lines.
      dtypes: model compute dtypes ('float32', 'bfloat16').
      remats: rematerialisation settings.
      schedules: `config.model.schedule` values of the recurrent models ('auto' is
        recorded as what it resolves to on this backend).

    Returns:
      Rows as `benchmark_one` returns them, plus {'skipped': reason} rows.
    """
    start = time.perf_counter()

    def resolved(name: str, image_size: int) -> list[str]:  # 'auto' may pick per kind and h
        hidden = SIZES[image_size].hidden_dim
        return list(
            dict.fromkeys(
                recurrence.resolve_schedule(s, kind=name, hidden_dim=hidden) for s in schedules
            )
        )

    plan = [
        (image_size, name, schedule, unroll, dtype, remat)
        for image_size in image_sizes
        for dtype in dtypes
        for remat in remats
        # The PixelCNN baseline first, so that a time budget never skips it.
        for name in sorted(model_names, key=lambda name: name != "pixelcnn")
        for schedule in resolved(name, image_size)[: None if name in RECURRENT_MODELS else 1]
        for unroll in (list(unrolls) if name in RECURRENT_MODELS else [1])
    ]
    rows = []
    # A progress bar on a terminal only (disable=None); the log lines say what each row got.
    bar = tqdm.tqdm(plan, desc="scan suite", unit="row", disable=None)
    for image_size, name, schedule, unroll, dtype, remat in bar:
        size = SIZES[image_size]
        key = {"model": name, "size": image_size, "data": size.name, "unroll": str(unroll)}
        key.update(dtype=dtype, remat=remat, schedule=schedule)
        variant = f"{name} {image_size} {schedule} unroll={unroll} {dtype}"
        variant += " remat" if remat else ""
        reason = skip_reason(name, size, unroll, max_unrolled_steps)
        if reason is None and time_budget_s and time.perf_counter() - start > time_budget_s:
            reason = "skipped: the run's time budget (--time_budget_s) was used up"
        if reason:
            log(f"{variant}: {reason}")
            rows.append({**key, "skipped": reason})
            continue
        row = benchmark_one(
            name,
            size,
            unroll,
            batch_size=batch_size or size.batch_size,
            repeats=repeats or {28: 5, 32: 3}.get(image_size, 2),
            peak_gflops=peak_gflops,
            dtype=dtype,
            remat=remat,
            schedule=schedule,
        )
        train_ms, forward_ms = row["train"]["median"] * 1e3, row["forward"]["median"] * 1e3
        log(
            f"{variant}: train {train_ms:.1f} ms "
            f"({row['train_images_per_s']:.1f} img/s), forward {forward_ms:.1f} ms, "
            f"compile {row['train_compile_s']:.1f} s, {row['loop_trips']} loop trips in "
            f"{row['loops']} loops, {row['dependent_steps']} dependent steps"
        )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Result files


def write_json(path: str, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Writes {'header': ..., 'rows': [...]} as indented JSON."""
    with open(path, "w") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Not JSON serialisable: {type(value)}")


def _ms(timing: dict[str, float] | None) -> str:
    if not timing:
        return ""
    return f"{timing['median'] * 1e3:.1f} ({timing['min'] * 1e3:.0f}-{timing['max'] * 1e3:.0f})"


def _mib(stats: dict[str, int] | None) -> str:
    return "" if not stats else f"{stats['peak_bytes'] / 2**20:.1f}"


def _steps(row: dict[str, Any]) -> str:
    return f"{row['loop_trips']} ({row['loops']})" if "loop_trips" in row else ""


def _pct(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


SCAN_COLUMNS = (
    ("model", lambda r: r["model"]),
    ("size", lambda r: f"{r['size']}x{r['size']}"),
    ("schedule", lambda r: r.get("schedule", "")),
    ("unroll", lambda r: r["unroll"]),
    ("batch", lambda r: str(r.get("batch_size", ""))),
    ("dtype", lambda r: r.get("dtype", "float32")),
    ("remat", lambda r: "yes" if r.get("remat") else "no"),
    ("loop trips (loops)", lambda r: _steps(r)),
    ("dependent steps", lambda r: str(r.get("dependent_steps", ""))),
    ("compile s (train)", lambda r: f"{r['train_compile_s']:.1f}"),
    ("forward ms: median (min-max)", lambda r: _ms(r.get("forward"))),
    ("train step ms: median (min-max)", lambda r: _ms(r.get("train"))),
    ("train img/s", lambda r: f"{r['train_images_per_s']:.1f}"),
    ("peak MiB (train)", lambda r: _mib(r.get("train_memory"))),
    ("model GFLOP/img (fwd)", lambda r: f"{r['model_flops_per_image'] / 1e9:.3f}"),
    ("train GFLOP/s", lambda r: f"{r['train_gflops']:.2f}"),
    ("of matmul peak", lambda r: _pct(r.get("train_fraction_of_peak"))),
)


def markdown_table(rows: list[dict[str, Any]], columns=SCAN_COLUMNS) -> str:
    """A Markdown table of result rows; skipped rows show their reason."""
    names = [name for name, _ in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        if "skipped" in row:
            cells = [row["model"], f"{row['size']}x{row['size']}", row.get("schedule", "")]
            cells += [row["unroll"], row["skipped"]]
            cells += [""] * (len(names) - len(cells))
        else:
            cells = [cell(row) for _, cell in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: str, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Writes a Markdown report: the machine and settings, then the table, then notes."""
    lines = [f"# {header.get('title', 'Benchmark')}", ""]
    machine = header.get("machine", {})
    lines.append(
        f"Device kind: **{machine.get('device_kind', '?')}** ({machine.get('platform', '?')}, "
        f"{machine.get('device_count', '?')} device(s)); CPU: {machine.get('cpu_model', '?')}, "
        f"nproc={machine.get('nproc', '?')}; jax {machine.get('jax', '?')}."
    )
    for key in ("xla_flags", "glibc_tunables"):
        if machine.get(key):
            lines.append(f"- {key.upper()}: `{machine[key]}`")
    keys = ("command", "matmul_peak", "flops", "memory", "loop_trips", "timing", "notes")
    for key in keys:
        if key in header:
            value = header[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            lines.append(f"- {key}: {value}")
    lines += ["", markdown_table(rows, header.get("columns", SCAN_COLUMNS)), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _fmt(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)
