"""Benchmarks: `python -m experiments.benchmark --output DIR [--quick] [filters]`.

Suites (`--suite`):
  scan      (default) Row LSTM and Diagonal BiLSTM for every unroll setting (and every
            `--schedules` value), PixelCNN as the baseline: compile time, forward and
            train-step time, memory, images/s, model FLOP/s and its fraction of a matmul peak
            measured in the same run, and the train step's loop trips, loops and dependent steps.
  sampling  naive vs cached sampling: `experiments.benchmarks.sampling.benchmark_sampling`.
  devices   data-parallel images/s of the train step on 1/2/4/8 devices (host-platform
            devices on CPU, one child process each): `experiments.benchmarks.devices`;
            `--models` (default here: row_lstm), `--device_counts`, `--repeats`.
  accelerator  the first run on a GPU/TPU, one report: causality, scan == unroll == Python
            loop == the latency schedule, cached == naive, the scan table in float32 and
            bfloat16 for both schedules at unroll 1/2/4/8 (the fastest per model), 500 training
            steps of the CIFAR-size models, bfloat16 vs float32 on MNIST, sampling and
            devices tables (`experiments.benchmarks.accelerator`); `--tiny` (default on a
            CPU) runs it at seconds-long sizes; `--sections` picks sections.
  compression  a trained model's .prnn files against its NLL, PNG, WebP, JPEG-XL and JPEG-LS,
            and encode/decode images/s (`experiments.benchmarks.compression`): `--config`
            and `--workdir` name the runs (comma-separated lists, paired), `--which`,
            `--dataset` (default each run's own), `--split`, `--num`. Without `--config`:
            encode/decode speed of untrained `--models` (default row_lstm) of the
            Fashion-MNIST models' size on random images.
  targets   scan vs unrolled per TPU slice or GPU, compiled here and never run: sequential
            steps, per-chip peak memory, compile time and the compiler's estimated step time
            of the runner's train step (`experiments.benchmarks.targets`); `--targets`,
            `--models`, `--sizes` (28, 32), `--unroll`, `--dtypes`, `--schedules`. Needs the
            `targets` extra; compiled results are cached in `--aot_cache_dir`.

Examples:
  python -m experiments.benchmark --output benchmark_results --quick
  python -m experiments.benchmark --output /tmp/b --models=row_lstm --sizes=28 --unroll=1,4,python
  python -m experiments.benchmark --output /tmp/b --quick --schedules=throughput,latency
  python -m experiments.benchmark --output /tmp/b --suite=devices --quick --device_counts=1,2 \
      --models=row_lstm,diagonal_bilstm --repeats=10
  python -m experiments.benchmark --output /tmp/b --suite=accelerator
  python -m experiments.benchmark --output benchmark_results --suite=compression \
      --config=row_lstm_mnist --workdir=workdirs/row_lstm_mnist --num=1000
  python -m experiments.benchmark --output /tmp/b --dtypes=float32,bfloat16 --remat=false,true \
      --sizes=32,64 --unroll_big=1
  python -m experiments.benchmark --output benchmark_results/targets --suite=targets \
      --targets=v5e-8,v4-32,h100x8

Writes DIR/<name>.json and DIR/<name>.md, where <name> is `--name` (default
`<platform>_<suite>[_quick]`). The default (non-quick) scan run times every unroll setting
at 28x28 and `--unroll_big` (1, 8) at 32x32 and 64x64 with small batches (2 and 1); it is
bounded by `--time_budget_s` (rows that would start later are recorded as skipped) and by
`--max_unrolled_steps` ('full' and 'python' rows whose layers x steps exceed it are skipped:
their compile time grows with the unrolled program and bought nothing in our runs).
"""

from __future__ import annotations

import os
import pathlib
import shlex
import time

import jax
from absl import app, flags, logging

from experiments import cli
from experiments.benchmarks import accelerator, compression, devices, memory, sampling, scan
from experiments.benchmarks import targets as targets_suite
from experiments.targets import compiled
from experiments.targets import devices as target_devices
from pixel_rnn_jax.nn import recurrence

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Directory for the JSON and Markdown result files.")
flags.DEFINE_string("name", None, "Result file stem; default <platform>_<suite>[_quick].")
flags.DEFINE_enum(
    "suite",
    "scan",
    ["scan", "sampling", "devices", "accelerator", "compression", "targets"],
    "Which benchmark to run.",
)
flags.DEFINE_bool("tiny", None, "--suite=accelerator: seconds-long sizes (default: on a CPU only).")
flags.DEFINE_list(
    "sections", list(accelerator.SECTIONS), "--suite=accelerator: the sections to run."
)
flags.DEFINE_bool("quick", False, "28x28 only, unroll 1 and 4, 3 repeats.")
flags.DEFINE_list("models", list(scan.MODEL_NAMES), "Models to run.")
flags.DEFINE_list("sizes", ["28", "32", "64"], "Image sizes: 28 (MNIST), 32 (CIFAR), 64.")
flags.DEFINE_list("unroll", ["1", "2", "4", "8", "full", "python"], "Unroll settings (28x28).")
flags.DEFINE_list(
    "unroll_big", ["1", "8"], "Unroll settings at 32x32 and 64x64 (slow rows on a CPU)."
)
flags.DEFINE_integer("batch_size", None, "Batch for every size (default: per size, 16/2/1).")
flags.DEFINE_integer("repeats", None, "Timed calls per measurement (default: 5/3/2 by size).")
flags.DEFINE_integer(
    "max_unrolled_steps", 200, "Skip 'full'/'python' rows with more layers x steps than this."
)
flags.DEFINE_float(
    "time_budget_s", 900.0, "Rows starting after this many seconds are recorded as skipped."
)
flags.DEFINE_integer("peak_size", 2048, "Side of the float32 matmul that measures the peak.")
flags.DEFINE_list("device_counts", ["1", "2", "4", "8"], "--suite=devices: device counts.")
flags.DEFINE_list("dtypes", ["float32"], "--suite=scan: model compute dtypes (bfloat16 too).")
flags.DEFINE_list("remat", ["false"], "--suite=scan: rematerialisation settings (false, true).")
flags.DEFINE_list(
    "schedules",
    ["auto"],
    "--suite=scan: model.schedule values of the recurrent models (auto, throughput, latency).",
)
flags.DEFINE_list("config", [], "--suite=compression: config names of the trained runs.")
flags.DEFINE_list("workdir", [], "--suite=compression: their workdirs (same order).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "--suite=compression: which checkpoint.")
flags.DEFINE_string("dataset", None, "--suite=compression: dataset (default: each run's own).")
flags.DEFINE_string("split", None, "--suite=compression: split (default: the reported one).")
flags.DEFINE_integer("num", 1000, "--suite=compression: the first N images of the split.")
flags.DEFINE_list("targets", ["v5e-8", "v4-32", "h100x8"], "--suite=targets: target names.")
flags.DEFINE_string(
    "aot_cache_dir", str(compiled.default_cache_dir()), "--suite=targets: compile cache; '' none."
)

QUICK = {"sizes": ["28"], "unroll": ["1", "4"], "repeats": 3}


def _parse_unrolls(values: list[str]) -> list[recurrence.Unroll]:
    unrolls = []
    for value in values:
        setting = recurrence.parse_unroll(value)  # raises on a bad value
        unrolls.append(value if isinstance(setting, bool | str) else setting)
    return unrolls


def _parse_bool(value: str, flag: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise app.UsageError(f"--{flag}: {value!r} is not true or false.")


def _check_choices(values: list[str], choices, flag: str) -> None:
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise app.UsageError(f"--{flag}: unknown {unknown}; choose from {list(choices)}.")


def run_scan(quick: bool, log) -> tuple[dict, list[dict]]:
    """The scan suite with the flags' filters; returns (header fields, rows)."""
    sizes = QUICK["sizes"] if quick else FLAGS.sizes
    unroll_values = QUICK["unroll"] if quick else FLAGS.unroll
    if quick and FLAGS["unroll"].present:
        unroll_values = FLAGS.unroll
    if quick and FLAGS["sizes"].present:
        sizes = FLAGS.sizes
    _check_choices(FLAGS.models, scan.MODEL_NAMES, "models")
    _check_choices(sizes, [str(s) for s in scan.SIZES], "sizes")
    _check_choices(FLAGS.dtypes, ("float32", "bfloat16"), "dtypes")
    _check_choices(FLAGS.schedules, ("auto", *recurrence.SCHEDULES), "schedules")
    repeats = FLAGS.repeats or (QUICK["repeats"] if quick else None)
    peak = scan.matmul_peak(FLAGS.peak_size)
    log(f"matmul peak ({FLAGS.peak_size}^2 float32): {peak['gflops']:.1f} GFLOP/s")
    rows, start = [], time.perf_counter()
    for size in sizes:
        # The big sizes get their own (shorter) unroll list unless --unroll is given; one
        # time budget covers all sizes.
        big = size in ("32", "64") and not quick and not FLAGS["unroll"].present
        unrolls = FLAGS.unroll_big if big else unroll_values
        budget = FLAGS.time_budget_s - (time.perf_counter() - start)
        rows += scan.benchmark_scan(
            FLAGS.models,
            [int(size)],
            _parse_unrolls(unrolls),
            repeats=repeats,
            batch_size=FLAGS.batch_size,
            max_unrolled_steps=FLAGS.max_unrolled_steps,
            time_budget_s=max(budget, 1e-9),
            peak_gflops=peak["gflops"],
            log=log,
            dtypes=FLAGS.dtypes,
            remats=[_parse_bool(value, "remat") for value in FLAGS.remat],
            schedules=FLAGS.schedules,
        )
    header = {
        "title": "Scan vs unrolled recurrences: compile, forward and train-step time",
        "matmul_peak": peak,
        "flops": (
            "model FLOPs per image are analytic (2 x multiply-adds of every conv/matmul, "
            "masked kernels by their nonzero entries, real pixels only); a train step counts "
            f"{scan.TRAIN_FLOPS_PER_FORWARD_FLOP}x forward. XLA's cost_analysis counts "
            "a while-loop body once (kept in the JSON as xla_train_flops_per_image)"
        ),
        "memory": "peak MiB = argument + output + temp - alias from memory_analysis()",
        "loop_trips": (
            "the train step's loops read from its jaxpr (experiments.benchmarks.loops): "
            "their total trip count, forward and backward, and (in brackets) their number; "
            "dependent steps: the longest chain of recurrence steps, which no unroll removes"
        ),
        "timing": (
            "median (min-max) of repeated calls after 1 warm-up call; train step = "
            "forward + backward + RMSProp update, jitted, params and optimiser state donated"
        ),
        "notes": "; ".join(
            f"{s.image_size}x{s.image_size} {s.name}: {s.note}"
            for s in scan.SIZES.values()
            if s.note
        ),
    }
    return header, rows


def run_sampling(quick: bool, log) -> tuple[dict, list[dict]]:
    """The sampling suite: `benchmarks.sampling.benchmark_sampling` (naive vs cached)."""
    rows = sampling.benchmark_sampling(quick=quick, log=log)
    columns = [(key, lambda r, key=key: str(r.get(key, ""))) for key in rows[0]] if rows else []
    return {"title": "Sampling", "columns": columns}, rows


def run_devices(quick: bool, log) -> tuple[dict, list[dict]]:
    """The devices suite: `benchmarks.devices` (one child process per row)."""
    return devices.run_suite(
        quick=quick,
        log=log,
        # --models defaults to all three for the scan suite; here the default is the Row LSTM.
        models=FLAGS.models if FLAGS["models"].present else ("row_lstm",),
        device_counts=[int(n) for n in FLAGS.device_counts],
        repeats=FLAGS.repeats,
    )


def run_compression(quick: bool, log) -> tuple[dict, list[dict]]:
    """The compression suite: `benchmarks.compression.run_suite` over the named runs."""
    if len(FLAGS.config) != len(FLAGS.workdir):
        raise app.UsageError("--config and --workdir must list the same number of runs.")
    return compression.run_suite(
        FLAGS.config,
        FLAGS.workdir,
        which=FLAGS.which,
        dataset=FLAGS.dataset,
        split=FLAGS.split,
        num=64 if quick else FLAGS.num,
        speed_models=FLAGS.models if FLAGS["models"].present else ("row_lstm",),
        log=log,
    )


def run_targets(quick: bool, log) -> tuple[dict, list[dict]]:
    """The targets suite: `benchmarks.targets.run_suite` over `--targets`."""
    defaults = {"sizes": ["28"], "unroll": ["1", "4"]} if quick else {"sizes": ["28", "32"]}
    sizes = FLAGS.sizes if FLAGS["sizes"].present else defaults["sizes"]
    unrolls = FLAGS.unroll if FLAGS["unroll"].present else defaults.get("unroll")
    _check_choices(FLAGS.models, scan.MODEL_NAMES, "models")
    _check_choices(sizes, [str(s) for s in targets_suite.DATASETS], "sizes")
    _check_choices(FLAGS.dtypes, ("float32", "bfloat16"), "dtypes")
    _check_choices(FLAGS.schedules, ("auto", *recurrence.SCHEDULES), "schedules")
    chosen = {
        "models": FLAGS.models,
        "sizes": [int(s) for s in sizes],
        "dtypes": FLAGS.dtypes if FLAGS["dtypes"].present else ("float32", "bfloat16"),
        "schedules": FLAGS.schedules if FLAGS["schedules"].present else recurrence.SCHEDULES,
    }
    if unrolls is not None:
        chosen["unrolls"] = _parse_unrolls([u for u in unrolls if u != "python"])
    return targets_suite.run_suite(
        FLAGS.targets,
        specs=targets_suite.row_specs(**chosen),
        per_chip_batch=FLAGS.batch_size or targets_suite.PER_CHIP_BATCH,
        cache_dir=pathlib.Path(FLAGS.aot_cache_dir) if FLAGS.aot_cache_dir else None,
        log=log,
    )


SUITES = {
    "targets": run_targets,
    "scan": run_scan,
    "sampling": run_sampling,
    "devices": run_devices,
    "compression": run_compression,
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.output:
        raise app.UsageError("--output DIR is required.")
    # Before JAX starts its backend: on a CPU, remat rows would otherwise save no memory.
    memory.keep_remat_barriers()
    if FLAGS.suite == "targets":  # compiles for TPUs and GPUs on this machine's CPU backend
        target_devices.prepare_environment()
    os.makedirs(FLAGS.output, exist_ok=True)
    if FLAGS.suite == "accelerator":
        _check_choices(FLAGS.sections, accelerator.SECTIONS, "sections")
        tiny = accelerator.default_tiny() if FLAGS.tiny is None else FLAGS.tiny
        name = FLAGS.name or f"{jax.default_backend()}_accelerator" + ("_tiny" if tiny else "")
        results = accelerator.run_suite(
            FLAGS.output,
            name,
            tiny=tiny,
            command="python -m experiments.benchmark " + shlex.join(present_flags()),
            sections=tuple(FLAGS.sections),
            time_budget_s=FLAGS.time_budget_s if FLAGS["time_budget_s"].present else 900.0,
            log=logging.info,
        )
        statuses = {section: result["status"] for section, result in results.items()}
        logging.info("Wrote %s.{json,md}: %s", os.path.join(FLAGS.output, name), statuses)
        return
    start = time.perf_counter()
    # The machine may be shared: the load before and after the run says how much.
    load_at_start = scan.machine_info()["load_average"]
    header, rows = SUITES[FLAGS.suite](FLAGS.quick, logging.info)
    header = {
        "machine": {**scan.machine_info(), "load_average_at_start": load_at_start},
        "command": "python -m experiments.benchmark " + shlex.join(present_flags()),
        "suite": FLAGS.suite,
        "quick": FLAGS.quick,
        "wall_s": time.perf_counter() - start,
        **header,
    }
    columns = header.pop("columns", None)
    name = FLAGS.name or f"{jax.default_backend()}_{FLAGS.suite}" + (
        "_quick" if FLAGS.quick else ""
    )
    base = os.path.join(FLAGS.output, name)
    scan.write_json(base + ".json", header, rows)
    if columns is not None:
        header["columns"] = columns
    scan.write_markdown(base + ".md", header, rows)
    logging.info("Wrote %s.json and %s.md in %.0f s", base, base, header["wall_s"])


def present_flags() -> list[str]:
    """The flags set away from their defaults, as `--name=value` strings."""
    names = ("output", "name", "suite", "quick", "models", "sizes", "unroll", "unroll_big")
    names += ("batch_size", "dtypes", "remat", "schedules", "tiny", "sections")
    names += ("repeats", "max_unrolled_steps", "time_budget_s", "peak_size", "device_counts")
    names += ("config", "workdir", "which", "dataset", "split", "num", "targets")
    given = []
    for name in names:
        if FLAGS[name].present or FLAGS[name].value != FLAGS[name].default:
            value = FLAGS[name].value
            if isinstance(value, bool):
                given.append(f"--{name}" if value else f"--no{name}")
                continue
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            given.append(f"--{name}={value}")
    return given


if __name__ == "__main__":
    cli.run(main)
