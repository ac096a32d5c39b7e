"""The first run on an accelerator: `python -m experiments.benchmark --suite=accelerator`.

One command that checks, on the current backend, what the CPU tests check here, and
measures what the per-backend defaults (schedule, unroll, dtype) should come from. Sections,
in the order they run (cheap correctness checks first, so that a time-out still leaves them):

  causality    the Jacobian of every model kind's logits w.r.t. its input (small image,
               float32 and bfloat16): no output depends on a later sub-pixel
  equivalence  scan (unroll 1) == unroll 2 == full unroll == Python loop == the 'latency'
               schedule: logits and gradients of both recurrent models
  sampling_eq  cached == naive sampling (identical images, float32) for every model kind;
               bfloat16: the cached walk's logits against the model's
  scan         the scan-vs-unrolled table (`scan.benchmark_scan`) at 28x28 and 32x32, float32
               and bfloat16, both schedules at unroll 1, 2, 4 and 8, with each train step's
               loop trips and dependent steps; then the fastest (schedule, unroll) per model,
               size and dtype: what `recurrence.AUTO_SCHEDULE` and the unroll default should say
  training     500 runner steps of each CIFAR-size recurrent model on the embedded RGB set
               (`train.train_and_evaluate`, bfloat16), then a test NLL
  precision    the same run of the MNIST Row LSTM in float32 and in bfloat16 (300 steps):
               test NLLs and their relative difference
  sampling     the sampling table (`sampling.benchmark_sampling`)
  devices      the devices table over every local device (`devices.benchmark_devices`)

The exact checks run at `jax.default_matmul_precision('highest')`: a GPU's default float32
matmul (TF32) rounds differently in each variant. `tiny=True` (automatic on a CPU) runs the
same sections at seconds-long sizes; CI runs it. Results go to DIR/<name>.json and .md,
rewritten after every section, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import configs
from experiments.benchmarks import devices, sampling, scan
from pixel_rnn_jax import metric_logging, models, train
from pixel_rnn_jax import sampling as samplers
from pixel_rnn_jax.nn import recurrence
from pixel_rnn_jax.sampling import cached

MODEL_KINDS = ("row_lstm", "diagonal_bilstm", "pixelcnn")
SECTIONS = (
    "causality",
    "equivalence",
    "sampling_eq",
    "scan",
    "training",
    "precision",
    "sampling",
    "devices",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of every section: `FULL` for an accelerator, `TINY` for a CPU (and CI)."""

    probe_shape: tuple[int, int, int]  # (height, width, channels) of the Jacobian probes
    probe_model: dict  # model fields of the probes, equivalence and sampling checks
    kinds: tuple  # (model name, full_context) of the causality and cached == naive checks
    sampling_dtypes: tuple  # dtypes of the cached == naive checks and the sampling table
    probes: int  # random points whose Jacobians are OR-ed
    scan_models: tuple
    train_configs: tuple  # the CIFAR-size configs trained
    unrolls: tuple  # equivalence: compared with unroll 1 (and the 'latency' schedule)
    scan_sizes: dict  # image size -> unroll settings of the scan table (every schedule)
    scan_dtypes: tuple  # model dtypes of the scan table
    scan_repeats: int | None
    max_unrolled_steps: int
    scan_budget_s: float
    train_steps: int
    train_model: dict  # overrides of the CIFAR configs' model (none at full size)
    train_batch: int
    eval_batches: int
    precision_steps: int
    precision_model: dict
    sampling_cases: tuple
    sampling_overrides: dict
    device_case: dict  # `devices.Case` fields
    device_batches: tuple


SMALL_MODEL = {"num_layers": 2, "hidden_dim": 6, "output_dim": 9}
TINY_MODEL = {"num_layers": 1, "hidden_dim": 4, "output_dim": 8, "first_kernel_size": 3}

ALL_KINDS = tuple((kind, False) for kind in MODEL_KINDS) + (("diagonal_bilstm", True),)
CIFAR_CONFIGS = ("row_lstm_cifar10", "diagonal_bilstm_cifar10")

FULL = Plan(
    probe_shape=(4, 5, 3),
    probe_model=SMALL_MODEL,
    kinds=ALL_KINDS,
    sampling_dtypes=("float32", "bfloat16"),
    probes=2,
    scan_models=scan.MODEL_NAMES,
    train_configs=CIFAR_CONFIGS,
    unrolls=(2, "full", "python"),
    scan_sizes={28: (1, 2, 4, 8), 32: (1, 2, 4, 8)},
    scan_dtypes=("float32", "bfloat16"),
    scan_repeats=None,
    max_unrolled_steps=200,
    scan_budget_s=480.0,
    train_steps=500,
    train_model={},
    train_batch=16,
    eval_batches=8,
    precision_steps=300,
    precision_model={},
    sampling_cases=tuple(sampling.default_cases(quick=True)),
    sampling_overrides={},
    device_case={"repeats": 10, "warmup": 2},
    device_batches=(16, 64),
)

# Every section at seconds-long sizes, one model kind where the full plan has all of them:
# what CI checks is that each section runs and reports, on this backend.
TINY = Plan(
    probe_shape=(2, 3, 3),
    probe_model=TINY_MODEL,
    kinds=(("row_lstm", False),),
    sampling_dtypes=("float32",),
    probes=1,
    scan_models=("row_lstm",),
    train_configs=CIFAR_CONFIGS[:1],
    unrolls=("python",),
    scan_sizes={8: (1,)},
    scan_dtypes=("float32",),  # both schedules; bfloat16 runs in the other sections
    scan_repeats=1,
    max_unrolled_steps=10,
    scan_budget_s=60.0,
    train_steps=2,
    train_model=TINY_MODEL,
    train_batch=2,
    eval_batches=1,
    precision_steps=2,
    precision_model=TINY_MODEL,
    sampling_cases=tuple(
        sampling.SamplingCase(kind, method, 3, 3, 1, 2, 2)
        for kind in ("row_lstm",)
        for method in ("naive", "cached")
    ),
    sampling_overrides=TINY_MODEL,
    device_case={
        "repeats": 1,
        "warmup": 1,
        "num_layers": 1,
        "hidden_dim": 4,
        "output_dim": 8,
        "first_kernel_size": 3,
        "image_size": 6,
    },
    device_batches=(2,),
)


def small_config(name: str, channels: int, levels: int, fields: dict, **overrides):
    """`models.default_model_config()` with `fields` and `overrides` applied."""
    config = models.default_model_config()
    config.update(name=name, num_channels=channels, num_levels=levels, **fields)
    config.update(overrides)
    return config


# ---------------------------------------------------------------------------------------
# Correctness sections


def causality_rows(plan: Plan) -> list[dict[str, Any]]:
    """The Jacobian probe of every model kind (and the full-context Diagonal), both dtypes."""
    height, width, channels = plan.probe_shape
    positions = height * width * channels
    earlier = np.tril(np.ones((positions, positions), bool), k=-1)
    rows = []
    for (kind, full_context), dtype in [
        (k, d) for k in plan.kinds for d in ("float32", "bfloat16")
    ]:
        config = small_config(
            kind, channels, 256, plan.probe_model, dtype=dtype, full_context=full_context
        )
        model = models.build_model(config)

        def outputs(x, variables, projection, model=model):
            logits = model.apply(variables, x[None], method="logits_from_inputs")[0]
            return (logits.astype(jnp.float32) @ projection).reshape(-1)

        jacobian_fn = jax.jit(jax.jacrev(outputs))
        found = np.zeros((positions, positions), bool)
        start = time.perf_counter()
        for probe in range(plan.probes):  # OR over points: a dead ReLU cannot hide a path
            keys = jax.random.split(jax.random.PRNGKey(probe), 3)
            variables = model.init(keys[0], jnp.zeros((1, height, width, channels), jnp.int32))
            x = jax.random.uniform(keys[1], (height, width, channels), minval=-1.0, maxval=1.0)
            projection = jax.random.normal(keys[2], (256,))
            jacobian = np.asarray(jacobian_fn(x, variables, projection), np.float32)
            found |= np.abs(jacobian.reshape(positions, positions)) > 0
        leaks = int((found & ~earlier).sum())
        rows.append(
            {
                "model": kind + (" (full_context)" if full_context else ""),
                "dtype": dtype,
                "image": "x".join(map(str, plan.probe_shape)),
                "dependencies": int(found.sum()),
                "leaks": leaks,
                "ok": leaks == 0 and found.sum() > positions,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return rows


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def equivalence_rows(plan: Plan) -> list[dict[str, Any]]:
    """Every unroll setting against unroll 1: logits and gradients (float32, highest)."""
    height, width, channels = plan.probe_shape
    images = jax.random.randint(jax.random.PRNGKey(0), (2, height, width, channels), 0, 256)
    rows = []
    recurrent = dict.fromkeys(kind for kind, _ in plan.kinds if kind in scan.RECURRENT_MODELS)
    # (unroll, schedule): every unroll under the 'throughput' schedule, then 'latency'.
    settings = [(1, "throughput")] + [(u, "throughput") for u in plan.unrolls]
    settings += [(1, "latency")]
    for kind in recurrent:
        results = {}
        for unroll, schedule in settings:
            model = models.build_model(
                small_config(
                    kind, channels, 256, plan.probe_model, unroll=unroll, schedule=schedule
                )
            )
            variables = model.init(jax.random.PRNGKey(1), images)

            def loss(params, model=model):
                logits = model.apply({"params": params}, images)
                picked = jnp.take_along_axis(logits, images[..., None], -1)[..., 0]
                return jnp.mean(jax.nn.logsumexp(logits, -1) - picked), logits

            with jax.default_matmul_precision("highest"):
                (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
                    variables["params"]
                )
            results[unroll, schedule] = (logits, jax.tree.leaves(grads))
        base_logits, base_grads = results[settings[0]]
        for unroll, schedule in settings[1:]:
            logits, grads = results[unroll, schedule]
            grad_rel = max(_max_rel(g, b) for g, b in zip(grads, base_grads, strict=True))
            logit_rel = _max_rel(logits, base_logits)
            rows.append(
                {
                    "model": kind,
                    "schedule": schedule,
                    "unroll": str(unroll),
                    "vs": "throughput, unroll 1",
                    "logits max rel diff": f"{logit_rel:.2e}",
                    "gradients max rel diff": f"{grad_rel:.2e}",
                    "ok": logit_rel < 1e-5 and grad_rel < 1e-4,
                }
            )
    return rows


def sampling_equality_rows(plan: Plan) -> list[dict[str, Any]]:
    """cached == naive images (float32); bfloat16: cached logits against `model.apply`."""
    height, width, channels = plan.probe_shape
    shape = (2, height, width, channels)
    rows = []
    for kind, full_context in plan.kinds:
        for dtype in plan.sampling_dtypes:
            config = small_config(
                kind, channels, 256, plan.probe_model, dtype=dtype, full_context=full_context
            )
            model = models.build_model(config)
            images = jax.random.randint(jax.random.PRNGKey(2), shape, 0, 256)
            variables = model.init(jax.random.PRNGKey(3), images)
            # Non-zero biases everywhere, so that a dropped bias shows.
            variables = jax.tree.map(
                lambda v: v + 0.05 * jax.random.normal(jax.random.PRNGKey(4), v.shape), variables
            )
            with jax.default_matmul_precision("highest"):
                drawn = {
                    method: np.asarray(
                        samplers.sample(
                            model,
                            variables,
                            jax.random.PRNGKey(5),
                            jnp.zeros(shape, jnp.int32),
                            method=method,
                        )
                    )
                    for method in ("naive", "cached")
                }
                walk = jax.jit(
                    lambda v, x, model=model: cached.run_incremental(
                        model, v, x, lambda p, logits, current: current, collect_logits=True
                    )[1]
                )
                cached_logits = walk(variables, images)
                logits = jax.jit(model.apply)(variables, images)
            same = float(np.mean(drawn["naive"] == drawn["cached"]))
            diff = float(jnp.max(jnp.abs(cached_logits - logits)))
            rows.append(
                {
                    "model": kind + (" (full_context)" if full_context else ""),
                    "dtype": dtype,
                    "image": "x".join(map(str, plan.probe_shape)),
                    "identical sub-pixels (cached vs naive)": f"{same:.4f}",
                    "max |cached - model| logit": f"{diff:.2e}",
                    # float32 must draw identical images; bfloat16 rounds differently in the
                    # two walks, so a draw may flip where a uniform falls within rounding.
                    "ok": same == 1.0 and diff < 1e-4 if dtype == "float32" else diff < 0.1,
                }
            )
    return rows


# ---------------------------------------------------------------------------------------
# Measurement sections


def scan_rows(plan: Plan, log: Callable[[str], Any]) -> list[dict[str, Any]]:
    """The scan-vs-unrolled table in the plan's dtypes, every schedule (`scan.benchmark_scan`)."""
    rows, start = [], time.perf_counter()
    for size, unrolls in plan.scan_sizes.items():
        rows += scan.benchmark_scan(
            plan.scan_models,
            [size],
            list(unrolls),
            repeats=plan.scan_repeats,
            max_unrolled_steps=plan.max_unrolled_steps,
            time_budget_s=max(plan.scan_budget_s - (time.perf_counter() - start), 1e-9),
            log=log,
            dtypes=plan.scan_dtypes,
            schedules=recurrence.SCHEDULES,
        )
    return rows


def fastest_settings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recurrent model, size and dtype of the scan table: its fastest (schedule, unroll)
    by train images/s, and the best of each schedule, to set the backend's defaults from."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "skipped" not in row and row["model"] in scan.RECURRENT_MODELS:
            groups.setdefault((row["model"], row["size"], row["dtype"]), []).append(row)
    summary = []
    for (model, size, dtype), group in groups.items():
        best = max(group, key=lambda r: r["train_images_per_s"])
        entry = {"model": model, "size": f"{size}x{size}", "dtype": dtype}
        entry["fastest"] = f"{best['schedule']}, unroll {best['unroll']}"
        for schedule in recurrence.SCHEDULES:
            own = [r for r in group if r["schedule"] == schedule]
            if own:
                top = max(own, key=lambda r: r["train_images_per_s"])
                entry[f"{schedule} img/s (unroll)"] = (
                    f"{top['train_images_per_s']:.1f} ({top['unroll']}), "
                    f"{top['loop_trips']} loop trips"
                )
        summary.append(entry)
    return summary


def _train_config(name: str, data_name: str, steps: int, plan: Plan, model: dict, **fields):
    config = configs.get_config(name)
    config.data.name = data_name
    config.data.strict = True
    config.model.update(model, **fields)
    tc = config.train
    tc.num_steps = steps
    tc.batch_size = plan.train_batch * jax.device_count()
    tc.eval_batch_size = 64 if not plan.train_model else 8
    tc.eval_batch_size *= jax.device_count()
    tc.eval_max_batches = plan.eval_batches
    tc.log_every = max(1, min(100, steps))
    tc.eval_every = 0
    tc.checkpoint_every = steps
    tc.num_samples = 0
    return config


def _run_training(config, workdir: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = train.train_and_evaluate(config, workdir)
    rows = [r for r in metric_logging.read_metrics(workdir) if "train/loss" in r]
    return {
        "steps": result["step"],
        "first logged loss": round(rows[0]["train/loss"], 3) if rows else None,
        "last logged loss": round(result.get("train/loss", float("nan")), 3),
        "eval NLL nats": round(result["eval/nll"], 3),
        "eval bits/dim": round(result["eval/bits_per_dim"], 4),
        "eval images": result["eval/num_images"],
        "images/s": round(result["images_per_sec"], 1),
        "wall s": round(time.perf_counter() - start, 1),
        "finite": bool(np.isfinite(result["eval/nll"])),
    }


def training_rows(plan: Plan, workdir: str) -> list[dict[str, Any]]:
    """500 runner steps of each CIFAR-size recurrent model (bfloat16) on embedded_rgb32."""
    rows = []
    for name in plan.train_configs:
        config = _train_config(
            name, "embedded_rgb32", plan.train_steps, plan, plan.train_model, dtype="bfloat16"
        )
        row = _run_training(config, os.path.join(workdir, name))
        rows.append({"config": name, "dtype": "bfloat16", "batch": config.train.batch_size, **row})
    return rows


def precision_rows(plan: Plan, workdir: str) -> list[dict[str, Any]]:
    """The MNIST Row LSTM trained in float32 and in bfloat16 from the same seed."""
    rows = []
    for dtype in ("float32", "bfloat16"):
        config = _train_config(
            "row_lstm_mnist",
            "embedded_binarized_mnist",
            plan.precision_steps,
            plan,
            plan.precision_model,
            dtype=dtype,
        )
        config.train.eval_max_batches = 0 if not plan.train_model else 1  # all 1,000 images
        row = _run_training(config, os.path.join(workdir, f"mnist_{dtype}"))
        rows.append({"config": "row_lstm_mnist", "dtype": dtype, **row})
    reference = rows[0]["eval NLL nats"]
    for row in rows:
        row["NLL vs float32"] = f"{100 * (row['eval NLL nats'] / reference - 1):+.2f}%"
    return rows


def sampling_rows(plan: Plan, log) -> list[dict[str, Any]]:
    """The sampling table, float32; then the cached rows again in bfloat16."""
    rows = []
    for dtype in plan.sampling_dtypes:
        cases = plan.sampling_cases
        if dtype == "bfloat16":
            cases = tuple(c for c in cases if c.method == "cached")
        overrides = {**plan.sampling_overrides, "dtype": dtype}
        for row in sampling.benchmark_sampling(
            cases=cases, model_overrides=overrides, log=log, repeats=2 if plan.scan_repeats else 3
        ):
            rows.append({"dtype": dtype, **row})
    return rows


def device_rows(plan: Plan, log) -> list[dict[str, Any]]:
    """Images/s of the runner's step on 1, 2, 4, ... and all local devices."""
    count = jax.local_device_count()
    counts = sorted({n for n in (1, 2, 4, 8, 16) if n <= count} | {count})
    return devices.benchmark_devices(
        counts,
        plan.device_batches,
        ("shard_map",),
        host_devices=jax.default_backend() == "cpu",
        log=log,
        **plan.device_case,
    )


# ---------------------------------------------------------------------------------------
# The report


def _table(rows: list[dict[str, Any]], columns=None) -> str:
    if not rows:
        return "(no rows)"
    if columns is not None:
        return scan.markdown_table(rows, columns)
    names = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(n, "")) for n in names) + " |")
    return "\n".join(lines)


TITLES = {
    "causality": "Causality: Jacobian of the logits w.r.t. every input sub-pixel",
    "equivalence": "Scan == unroll == Python loop == latency schedule (float32, highest precision)",
    "sampling_eq": "Cached == naive sampling",
    "scan": "Schedules and unroll, float32 and bfloat16 (the runner's train step)",
    "training": "Training: the runner on the embedded RGB set (CIFAR-size models, bfloat16)",
    "precision": "bfloat16 vs float32: the MNIST Row LSTM, same seed and batches",
    "sampling": "Sampling: naive vs cached",
    "devices": "Devices: the runner's data-parallel step over the local devices",
}


def _estimate_ms(row: dict[str, Any]) -> str:
    parts = row.get("estimated_train")
    return "" if parts is None else f"{parts['estimated_s'] * 1e3:.1f}"


# The scan table with the compiler's estimate of each train step beside its measured time
# (`experiments.targets.estimate`): the rows that recalibrate the targets suite's estimates.
COLUMNS = {
    "scan": (*scan.SCAN_COLUMNS, ("train step ms: estimated", _estimate_ms)),
    "devices": devices.COLUMNS,
}


def write_report(base: str, header: dict[str, Any], sections: dict[str, dict]) -> None:
    """DIR/<name>.json (header + every section's rows) and the Markdown report."""
    with open(base + ".json", "w") as f:
        json.dump({"header": header, "sections": sections}, f, indent=1, default=str)
        f.write("\n")
    machine = header["machine"]
    lines = [
        "# Accelerator suite",
        "",
        f"Device kind: **{machine['device_kind']}** ({machine['platform']}, "
        f"{machine['device_count']} device(s)); CPU: {machine['cpu_model']}, "
        f"nproc={machine['nproc']}; jax {machine['jax']}.",
        f"- command: {header['command']}",
        f"- sizes: {'tiny (CPU)' if header['tiny'] else 'full'}; wall {header['wall_s']:.0f} s; "
        f"load average {machine['load_average']}",
    ]
    if machine.get("xla_flags"):
        lines.append(f"- XLA_FLAGS: `{machine['xla_flags']}`")
    for name in SECTIONS:
        if name not in sections:
            continue
        section = sections[name]
        lines += ["", f"## {TITLES[name]}", ""]
        status = section.get("status", "")
        lines.append(f"{status}; {section.get('seconds', 0):.0f} s.")
        lines += ["", _table(section.get("rows", []), COLUMNS.get(name)), ""]
        if name == "scan" and section.get("rows"):
            lines += ["Fastest (schedule, unroll) by train images/s:", ""]
            lines += [_table(fastest_settings(section["rows"])), ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def run_suite(
    output: str,
    name: str,
    *,
    tiny: bool,
    command: str,
    sections: tuple[str, ...] = SECTIONS,
    time_budget_s: float = 900.0,
    log: Callable[[str], Any] = print,
) -> dict[str, dict]:
    """Runs `sections` in order and writes the report after each; returns the sections.

    A section that raises is recorded with its error and the next one runs; sections that
    would start after `time_budget_s` are recorded as skipped.
    """
    plan = TINY if tiny else FULL
    os.makedirs(output, exist_ok=True)
    base = os.path.join(output, name)
    start = time.perf_counter()
    load_at_start = scan.machine_info()["load_average"]
    header = {"command": command, "tiny": tiny, "plan": dataclasses.asdict(plan)}
    results: dict[str, dict] = {}
    workdir = tempfile.mkdtemp(prefix="pixel_rnn_accelerator_")
    runners = {
        "causality": lambda: causality_rows(plan),
        "equivalence": lambda: equivalence_rows(plan),
        "sampling_eq": lambda: sampling_equality_rows(plan),
        "scan": lambda: scan_rows(plan, log),
        "training": lambda: training_rows(plan, workdir),
        "precision": lambda: precision_rows(plan, workdir),
        "sampling": lambda: sampling_rows(plan, log),
        "devices": lambda: device_rows(plan, log),
    }
    for section in sections:
        section_start = time.perf_counter()
        if section_start - start > time_budget_s:
            results[section] = {"status": "skipped: the suite's time budget was used up"}
        else:
            log(f"accelerator suite: {section}")
            try:
                rows = runners[section]()
                bad = [r for r in rows if r.get("ok") is False or r.get("finite") is False]
                failed = [r for r in rows if "error" in r]
                status = "PASS" if not bad and not failed else f"FAIL ({len(bad + failed)} rows)"
                if not any("ok" in r or "finite" in r for r in rows):
                    status = "measured" if not failed else status
                results[section] = {"status": status, "rows": rows}
            except Exception as error:  # noqa: BLE001 - the next sections must still run
                log(f"accelerator suite: {section} failed: {error!r}")
                results[section] = {"status": f"ERROR: {type(error).__name__}: {error}"[:500]}
        results[section]["seconds"] = time.perf_counter() - section_start
        header.update(
            machine={**scan.machine_info(), "load_average_at_start": load_at_start},
            wall_s=time.perf_counter() - start,
        )
        write_report(base, header, results)
    return results


def default_tiny() -> bool:
    """Tiny sizes unless an accelerator is present."""
    return jax.default_backend() == "cpu"
