"""Data-parallel scaling of the train step: images/s on 1, 2, 4, 8 devices.

XLA fixes the number of host-platform (CPU) devices when JAX starts
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`), so each measurement runs in its own
child process: `measure(case)` starts `python -m experiments.benchmarks.devices '<case JSON>'`,
which builds the runner's own data-parallel train step (`train.make_train_step`:
`jax.jit(jax.shard_map(...))` with `lax.pmean`, RMSProp with gradient clipping) on a mesh of
N devices, times it, and prints one JSON line that the parent parses. A `jax.pmap` variant
of the same per-device step can be measured next to it (`method='pmap'`).

Timing: the global batch is placed on the devices once; after `warmup` untimed steps (the
first one compiles), `repeats` steps are timed one by one, each ended by
`block_until_ready`, and the median is reported (images/s = global batch / median step).
Host-to-device batch transfer and the input pipeline are not included.

What forced host-platform numbers mean: the N "devices" are N XLA CPU clients sharing the
same cores, so they cannot add compute. They measure what data parallelism costs on one
machine (per-device programs on smaller slices, the all-reduce of the gradients, and
dispatch of N programs), not the speed-up of N real accelerators. On real devices
(GPU/TPU; `platform` detected by `probe_platform`), the same code uses the first N devices.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULT_PREFIX = "DEVICE_SCALING_RESULT "
DEFAULT_DEVICE_COUNTS = (1, 2, 4, 8)
DEFAULT_BATCH_SIZES = (16, 64)
METHODS = ("shard_map", "pmap")
# The runner's optimiser settings of experiments/configs/base.py (Torch-style RMSProp).


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement: a device count, a global batch, a method and the model's size."""

    num_devices: int
    batch_size: int  # global batch, split evenly over the devices
    method: str = "shard_map"  # 'shard_map' (the runner's step) or 'pmap'
    host_devices: bool = True  # force N host-platform (CPU) devices; False: real devices
    # The model: MNIST Row LSTM, 7 layers, h=16 (the paper's MNIST size) by default.
    model_name: str = "row_lstm"
    num_layers: int = 7
    hidden_dim: int = 16
    output_dim: int = 32
    first_kernel_size: int = 7
    image_size: int = 28
    unroll: int = 1
    repeats: int = 10  # timed steps
    warmup: int = 2  # untimed steps first (the first compiles)

    def check(self):
        """Raises ValueError for a case that cannot run (before any process is started)."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.num_devices < 1 or self.batch_size < 1 or self.batch_size % self.num_devices:
            raise ValueError(
                f"batch_size={self.batch_size} must be a positive multiple of "
                f"num_devices={self.num_devices}."
            )
        if self.repeats < 1 or self.warmup < 1:
            raise ValueError("repeats and warmup must be >= 1 (warm-up includes compilation).")


def child_env(case: Case, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: N forced host devices on CPU, else the real devices."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if case.host_devices:
        flags.append(f"--xla_force_host_platform_device_count={case.num_devices}")
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env["XLA_FLAGS"] = " ".join(flags)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def probe_platform(timeout_s: float = 120) -> tuple[str, int]:
    """(backend, device count) of a fresh JAX process, without starting JAX here."""
    code = "import jax, json; print(json.dumps([jax.default_backend(), jax.device_count()]))"
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if out.returncode:
        raise RuntimeError(f"Could not start JAX to detect the platform:\n{out.stderr[-2000:]}")
    backend, count = json.loads(out.stdout.strip().splitlines()[-1])
    return backend, int(count)


def measure(case: Case, *, timeout_s: float = 600) -> dict[str, Any]:
    """Runs `case` in a child process and returns its result row.

    Returns:
      The child's row (see `run_case`), or the case's fields plus 'error' (the reason and
      the tail of the child's output) if it failed or ran past `timeout_s`.
    """
    case.check()
    command = [sys.executable, "-m", "experiments.benchmarks.devices", json.dumps(asdict(case))]
    start = time.perf_counter()
    try:
        out = subprocess.run(
            command,
            env=child_env(case),
            cwd=_REPO_ROOT,  # where `experiments` is importable
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as error:
        tail = (error.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {**asdict(case), "error": f"timed out after {timeout_s:g} s: {tail}"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if out.returncode or not lines:
        tail = (out.stderr or out.stdout)[-1500:]
        return {**asdict(case), "error": f"child exited with {out.returncode}: {tail}"}
    row = json.loads(lines[-1][len(RESULT_PREFIX) :])
    row["process_s"] = time.perf_counter() - start
    return row


def asdict(case: Case) -> dict[str, Any]:
    return dataclasses.asdict(case)


def benchmark_devices(
    device_counts: Sequence[int] = DEFAULT_DEVICE_COUNTS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    methods: Sequence[str] = ("shard_map",),
    *,
    host_devices: bool = True,
    log: Callable[[str], Any] = print,
    timeout_s: float = 600,
    **case_fields: Any,
) -> list[dict[str, Any]]:
    """Measures every (batch, method, device count); one child process each.

    Args:
      device_counts: numbers of devices (each must divide every batch size).
      batch_sizes: global batches.
      methods: 'shard_map' and/or 'pmap'.
      host_devices: force host-platform CPU devices (True) or use real devices (False).
      log: progress lines.
      timeout_s: per child.
      **case_fields: other `Case` fields (model size, repeats, warmup).

    Returns:
      One row per case, by batch, then method, then device count; failed cases carry
      'error'. Rows of a (batch, method) group carry 'speedup_vs_1' relative to its
      smallest device count.
    """
    rows = []
    for batch_size in batch_sizes:
        # Methods alternate within a device count, so that a shared machine's load drifts over
        # both alike; the rows are then listed by method.
        measured: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
        for num_devices in device_counts:
            for method in methods:
                case = Case(num_devices, batch_size, method, host_devices, **case_fields)
                row = measure(case, timeout_s=timeout_s)
                where = f"{case.model_name}, {num_devices} device(s), batch {batch_size}, {method}"
                if "error" in row:
                    log(f"{where}: {row['error']}")
                else:
                    log(
                        f"{where}: "
                        f"{row['images_per_s']:.1f} images/s (median step "
                        f"{1e3 * row['step_s']['median']:.1f} ms)"
                    )
                measured[method].append(row)
        for group in measured.values():
            good = [r for r in group if "error" not in r]
            for row in good:
                row["speedup_vs_1"] = row["images_per_s"] / good[0]["images_per_s"]
                row["baseline_devices"] = good[0]["num_devices"]
            rows.extend(group)
    return rows


def run_suite(
    quick: bool = False,
    log: Callable[[str], Any] = print,
    *,
    models: Sequence[str] = ("row_lstm",),
    device_counts: Sequence[int] | None = None,
    repeats: int | None = None,
) -> tuple[dict, list[dict]]:
    """The `--suite=devices` benchmark: (header fields, rows) for `experiments/benchmark.py`.

    On a CPU-only machine: 1, 2, 4, 8 forced host-platform devices; elsewhere the real
    devices (counts up to what is visible). Global batches 16 and 64 (also 256 on
    accelerators), shard_map always and pmap at the first batch size; `quick`: batch 16,
    shard_map only, 3 timed steps. `models` (MNIST size, 7 layers, h=16 each),
    `device_counts` and `repeats` narrow or change that.
    """
    backend, visible = probe_platform()
    host = backend == "cpu"
    counts = DEFAULT_DEVICE_COUNTS if device_counts is None else tuple(device_counts)
    if not host:
        counts = [n for n in counts if n <= visible]
    batch_sizes = DEFAULT_BATCH_SIZES if host else (*DEFAULT_BATCH_SIZES, 256)
    repeats = repeats or (3 if quick else 10)
    log(f"devices suite on {backend} ({visible} visible): device counts {list(counts)}")
    # (global batch, methods): quick runs shard_map at the first batch only; full runs add
    # pmap at the first batch.
    if quick:
        plan = [(batch_sizes[0], ("shard_map",))]
    else:
        plan = [(b, METHODS if i == 0 else ("shard_map",)) for i, b in enumerate(batch_sizes)]
    rows = []
    for model_name in models:
        for batch_size, methods in plan:
            rows += benchmark_devices(
                counts,
                [batch_size],
                methods,
                host_devices=host,
                log=log,
                repeats=repeats,
                model_name=model_name,
            )
    meaning = (
        "the N devices are forced host-platform CPU devices sharing this machine's cores "
        f"(nproc={os.cpu_count()}): they cannot add compute, so these rows measure the cost "
        "of data parallelism (smaller per-device programs, the gradient all-reduce, N "
        "dispatches), not an N-device speed-up"
        if host
        else f"the first N of {visible} real {backend} device(s)"
    )
    header = {
        "title": "Data-parallel train step: images/s by device count (MNIST-size models)",
        "timing": (
            f"median of {repeats} timed train steps after 2 untimed (the first compiles), "
            "each ended by block_until_ready; batch already on the devices; one child "
            "process per row (XLA fixes the host device count at start-up)"
        ),
        "notes": (
            f"models: {', '.join(models)}; 7 layers, h=16, 28x28x1 binary; train step = "
            "the runner's jit(shard_map) step with pmean of gradients, RMSProp, clipping "
            f"(pmap rows: the same per-device step under jax.pmap); {meaning}"
        ),
        "columns": COLUMNS,
    }
    return header, rows


def _fmt_ms(row: dict[str, Any]) -> str:
    t = row.get("step_s")
    return "" if not t else f"{t['median'] * 1e3:.1f} ({t['min'] * 1e3:.0f}-{t['max'] * 1e3:.0f})"


# (column title, cell) pairs in the form `benchmarking.markdown_table` takes.
COLUMNS = (
    ("model", lambda r: r["model_name"]),
    ("devices", lambda r: str(r["num_devices"])),
    ("global batch", lambda r: str(r["batch_size"])),
    ("per-device batch", lambda r: str(r["batch_size"] // r["num_devices"])),
    ("method", lambda r: r["method"]),
    ("step ms median (min-max)", lambda r: _fmt_ms(r) or r.get("error", "")[:80]),
    ("images/s", lambda r: f"{r['images_per_s']:.1f}" if "images_per_s" in r else ""),
    ("vs fewest devices", lambda r: f"{r['speedup_vs_1']:.2f}x" if "speedup_vs_1" in r else ""),
    ("first step s (compile)", lambda r: f"{r['first_step_s']:.1f}" if "first_step_s" in r else ""),
)


# ------------------------------------------------------------------------------------------
# The child: one measurement on the devices this process sees.


def run_case(case: Case) -> dict[str, Any]:
    """Builds and times the data-parallel train step on `case.num_devices` devices."""
    import jax
    import numpy as np

    from experiments.benchmarks import runner_step
    from pixel_rnn_jax import models, parallel, train

    case.check()
    devices = jax.devices()
    if len(devices) < case.num_devices:
        raise ValueError(
            f"{case.num_devices} device(s) requested, {len(devices)} {jax.default_backend()} "
            "device(s) visible."
        )
    devices = devices[: case.num_devices]
    model_config = models.default_model_config()
    model_config.update(
        name=case.model_name,
        num_layers=case.num_layers,
        hidden_dim=case.hidden_dim,
        output_dim=case.output_dim,
        first_kernel_size=case.first_kernel_size,
        unroll=case.unroll,
    )
    model = models.build_model(model_config)
    shape = (case.image_size, case.image_size, 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2, (case.batch_size, *shape)).astype(np.uint8)

    if case.method == "shard_map":
        # The runner's own step, placed on the mesh as the runner places it.
        step, state, batch, key = runner_step.runner_train_step(model, 2, images, devices=devices)
    else:
        # The same per-device step under jax.pmap, which needs its own placement.
        tx = runner_step.optimizer()
        init = functools.partial(train.init_train_state, model=model, tx=tx, image_shape=shape)
        host_state = jax.device_get(jax.jit(init)(jax.random.PRNGKey(0)))
        key = jax.random.PRNGKey(1)
        n = case.num_devices
        per_device = functools.partial(train.train_step, model=model, tx=tx, num_levels=2)
        step = jax.pmap(
            per_device, axis_name=parallel.DATA_AXIS, donate_argnums=(0,), devices=devices
        )
        place = jax.pmap(lambda x: x, devices=devices)  # onto the devices, once
        state = place(jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), host_state))
        batch = place({"image": images.reshape(n, case.batch_size // n, *shape)})
        key = place(np.stack([np.asarray(key)] * n))

    samples = []
    first_step_s = None
    for index in range(case.warmup + case.repeats):
        start = time.perf_counter()
        state, metrics = step(state, batch, key)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - start
        if index == 0:
            first_step_s = elapsed
        if index >= case.warmup:
            samples.append(elapsed)
    loss = float(np.ravel(np.asarray(metrics["loss"]))[0])
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss}")
    values = np.asarray(samples)
    median = float(np.median(values))
    device = devices[0]
    return {
        **asdict(case),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "visible_devices": jax.device_count(),
        "step_s": {
            "median": median,
            "min": float(values.min()),
            "max": float(values.max()),
            "q25": float(np.percentile(values, 25)),
            "q75": float(np.percentile(values, 75)),
            "repeats": len(samples),
        },
        "first_step_s": first_step_s,
        "images_per_s": case.batch_size / median,
        "loss": loss,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python -m experiments.benchmarks.devices '<Case JSON>'\n{__doc__}")
        return 2
    row = run_case(Case(**json.loads(argv[1])))
    print(RESULT_PREFIX + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
