"""Two real JAX processes on 127.0.0.1: training, checkpoints, resume, preemption, bad setups.

Each process is a separate Python interpreter with one CPU device, joined by
`jax.distributed.initialize` (gloo CPU collectives, JAX's default), reading its own shard of
the embedded MNIST train split. The reference is computed in the pytest process (one device):
the same train step on the same global batches (process 0's local batch followed by process
1's), from the same initial state, so 1-process and 2-process results agree up to float
reassociation.

Two tests (the runs are the expensive part; module fixtures would be recomputed by every
pytest-xdist worker). All subprocesses have bounded timeouts, are killed on timeout, and their
logs are printed on failure:
  1. `python -m experiments.train` on both processes: 4 steps, checkpoints at 2 and 4,
     final evaluation of the whole test split, samples from process 0 only.
  2. This file as a worker on both processes (`train_and_evaluate(..., return_state=True)`):
     resumes from the step-4 checkpoint both wrote, trains on until one process gets SIGTERM,
     then both save at the same step and exit; each dumps its own copy of the parameters.
  3. (second test) Bad setups, started at once: an unreachable coordinator, a coordinator
     whose peer never comes, and a workdir that the processes do not share.
"""

import argparse
import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "row_lstm_mnist_smoke"
GLOBAL_BATCH = 4
EVAL_BATCH = 64
NUM_PROCESSES = 2


def _overrides(data_dir: str, **train) -> dict:
    """Config overrides shared by the runs and the reference (dotted keys)."""
    values = {
        "data.data_dir": data_dir,
        "train.batch_size": GLOBAL_BATCH,
        "train.eval_batch_size": EVAL_BATCH,
        "train.eval_max_batches": 0,  # the whole test split
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.num_samples": 0,
    }
    values.update({f"train.{key}": value for key, value in train.items()})
    return values


def _config(overrides: dict):
    from experiments import configs

    config = configs.get_config(CONFIG)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def _worker(argv: list[str]):
    """One process of run 2: join, train (resuming) until preempted, dump local params."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overrides", required=True)
    args = parser.parse_args(argv)

    from absl import logging

    logging.set_verbosity(logging.INFO)
    from pixel_rnn_jax import metric_logging, parallel, train

    metric_logging.quiet_library_info_logs()
    parallel.maybe_initialize_distributed(
        True,
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=NUM_PROCESSES,
        process_id=args.process_id,
        initialization_timeout=60,
    )
    import jax
    import numpy as np

    config = _config(json.loads(args.overrides))
    result, state = train.train_and_evaluate(config, args.workdir, return_state=True)
    # This process's own copy of the replicated parameters (its one local device).
    local = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state.params)
    leaves, _ = jax.tree_util.tree_flatten_with_path(local)
    np.savez(
        os.path.join(args.out, f"params_{jax.process_index()}.npz"),
        **{jax.tree_util.keystr(path): value for path, value in leaves},
    )
    print("RESULT " + json.dumps({k: result[k] for k in ("step", "preempted")}), flush=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker(sys.argv[2:])
    sys.exit(0)

# ------------------------------------------------------------------------------------------
# The tests (pytest process, one CPU device).

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pixel_rnn_jax import data, metric_logging, models, parallel, train  # noqa: E402

RUN_TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(cache_dir: str) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env.update(
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
        # Run 2 reuses run 1's compiled steps.
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    return env


class _Processes:
    """Subprocesses with log files; `finish` bounds their time and reports their logs."""

    def __init__(self, commands: list[list[str]], env: dict, log_dir: pathlib.Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"process_{i}.log" for i in range(len(commands))]
        self.procs = []
        for command, log in zip(commands, self.logs, strict=True):
            with open(log, "w") as f:
                self.procs.append(
                    subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
                )

    def output(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def report(self) -> str:
        return "\n".join(
            f"===== process {i} (rc={p.poll()}) =====\n{self.output(i)[-6000:]}"
            for i, p in enumerate(self.procs)
        )

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def finish(self, timeout_s: float) -> list[int]:
        """Waits for every process; kills all and fails (with their logs) on timeout."""
        deadline = time.monotonic() + timeout_s
        try:
            for proc in self.procs:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"processes did not finish within {timeout_s} s:\n{self.report()}")
        return [proc.returncode for proc in self.procs]


def _train_command(workdir, port, process_id, overrides, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.train",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={NUM_PROCESSES}",
        f"--process_id={process_id}",
        *[f"--config.{key}={value}" for key, value in overrides.items()],
        *extra,
    ]


def _reference(config, spec, num_steps: int, keep: set[int]):
    """1-device training on the global batches the two processes feed together."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    model = models.build_model(config.model)
    tx = train.make_optimizer(config.train)
    init = jax.jit(
        lambda rng: train.init_train_state(rng, model=model, tx=tx, image_shape=spec.image_shape)
    )
    # The same keys as train_and_evaluate: split(PRNGKey(seed), 3) -> init, train, sample.
    init_rng, train_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    state = init(init_rng)
    iterators = [
        data.TrainIterator(
            spec,
            config.data,
            global_batch_size=GLOBAL_BATCH,
            seed=config.seed,
            process_index=index,
            process_count=NUM_PROCESSES,
        )
        for index in range(NUM_PROCESSES)
    ]
    step_fn = train.make_train_step(model, tx, spec.num_levels, mesh)
    losses, params = {}, {}
    for step in range(1, num_steps + 1):
        # make_array_from_process_local_data puts process 0's rows first, then process 1's.
        batch = {"image": np.concatenate([next(it)["image"] for it in iterators])}
        state, metrics = step_fn(state, parallel.shard_batch(batch, mesh), train_rng)
        losses[step] = float(metrics["loss"])
        if step in keep:
            params[step] = jax.tree.map(np.asarray, jax.device_get(state.params))
    for it in iterators:
        it.close()
    return losses, params, mesh, model


def _max_rel_diff(a, b) -> float:
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(b))
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ) / max(scale, 1.0)


def _train_losses(workdir) -> dict[int, float]:
    rows = metric_logging.read_metrics(str(workdir))
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert len(steps) == len(set(steps)), f"duplicated metric rows (two writers?): {steps}"
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    data_dir = str(root / "tfds")
    overrides = _overrides(data_dir)
    spec = data.resolve_dataset(_config(overrides).data)  # prepares the embedded set once
    return {
        "root": root,
        "data_dir": data_dir,
        "spec": spec,
        "env": _child_env(str(root / "jax_cache")),
    }


def _two_process_runs(setup) -> dict:
    """Run 1 (CLI, 4 steps) then run 2 (workers, resume until SIGTERM); returns what they left."""
    root, env = setup["root"], setup["env"]
    workdir, out = root / "run", root / "out"
    out.mkdir()

    # Run 1: experiments.train on both processes, 4 steps, checkpoints at 2 and 4.
    overrides = _overrides(setup["data_dir"], num_steps=4, checkpoint_every=2, num_samples=1)
    port = _free_port()
    start = time.monotonic()
    run1 = _Processes(
        [_train_command(workdir, port, i, overrides) for i in range(NUM_PROCESSES)],
        env,
        root / "logs_run1",
    )
    try:
        codes = run1.finish(RUN_TIMEOUT_S)
    finally:
        run1.kill()
    assert codes == [0, 0], run1.report()
    run1_seconds = time.monotonic() - start
    run1_outputs = [run1.output(i) for i in range(NUM_PROCESSES)]
    run1_losses = _train_losses(workdir)
    run1_eval = [r for r in metric_logging.read_metrics(str(workdir)) if "eval/nll" in r]
    data_meta = json.loads((workdir / "checkpoints" / "4" / "data" / "metadata").read_text())
    checkpoint_steps = sorted(os.listdir(workdir / "checkpoints"))
    images = sorted(os.listdir(workdir / metric_logging.IMAGES_DIR))
    run_info = json.loads((workdir / "config.json").read_text())
    loaded = train.load_checkpoint(_config(overrides), str(workdir))  # read-only, 1 device
    step4_params = jax.tree.map(np.asarray, jax.device_get(loaded.params))

    # Run 2: workers resume from step 4 and train until process 1 receives SIGTERM.
    overrides2 = _overrides(setup["data_dir"], num_steps=10**6, checkpoint_every=10**6)
    port = _free_port()
    start = time.monotonic()
    worker = [sys.executable, __file__, "worker", f"--port={port}", f"--workdir={workdir}"]
    worker += [f"--out={out}", f"--overrides={json.dumps(overrides2)}"]
    run2 = _Processes(
        [worker + [f"--process_id={i}"] for i in range(NUM_PROCESSES)], env, root / "logs_run2"
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while max(_train_losses(workdir), default=0) < 7:  # resumed and trained 3+ steps
            if any(p.poll() is not None for p in run2.procs) or time.monotonic() > deadline:
                pytest.fail(f"run 2 did not get to step 7:\n{run2.report()}")
            time.sleep(0.1)
        run2.procs[1].send_signal(signal.SIGTERM)  # a preemption notice on one host only
        codes = run2.finish(RUN_TIMEOUT_S)
    finally:
        run2.kill()
    assert codes == [0, 0], run2.report()
    run2_seconds = time.monotonic() - start
    results = []
    for i in range(NUM_PROCESSES):
        lines = [ln for ln in run2.output(i).splitlines() if ln.startswith("RESULT ")]
        assert lines, run2.report()
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    print(f"run 1: {run1_seconds:.1f} s; run 2: {run2_seconds:.1f} s; stopped at {results}")
    return {
        "workdir": workdir,
        "run1_outputs": run1_outputs,
        "run1_losses": run1_losses,
        "run1_eval": run1_eval,
        "data_meta": data_meta,
        "checkpoint_steps_after_run1": checkpoint_steps,
        "images": images,
        "run_info": run_info,
        "step4": (loaded.step, step4_params),
        "run2_results": results,
        "run2_outputs": [run2.output(i) for i in range(NUM_PROCESSES)],
        "params": [dict(np.load(out / f"params_{i}.npz")) for i in range(NUM_PROCESSES)],
    }


def _reference_for(setup, two_process_runs) -> dict:
    """The 1-device losses and parameters up to the step run 2 stopped at, and eval at 4."""
    stop_step = two_process_runs["run2_results"][0]["step"]
    config = _config(_overrides(setup["data_dir"]))
    losses, params, mesh, model = _reference(config, setup["spec"], stop_step, {4, stop_step})
    eval_batches = data.eval_batches(setup["spec"], config.data, global_batch_size=EVAL_BATCH)
    eval_metrics = train.evaluate(
        train.make_eval_step(model, setup["spec"].num_levels, mesh),
        parallel.replicate(params[4], mesh),
        eval_batches,
        mesh,
        math.prod(setup["spec"].image_shape),
    )
    return {"losses": losses, "params": params, "eval": eval_metrics}


def test_two_processes_train_like_one_process_then_resume_and_stop_together(setup):
    two_process_runs = _two_process_runs(setup)
    reference = _reference_for(setup, two_process_runs)

    # --- Run 1 equals one process fed the same global batches.
    losses = two_process_runs["run1_losses"]
    assert sorted(losses) == [1, 2, 3, 4]
    for step, loss in losses.items():
        assert loss == pytest.approx(reference["losses"][step], rel=1e-5), step
    step, params = two_process_runs["step4"]
    assert step == 4
    assert _max_rel_diff(params, reference["params"][4]) < 1e-5
    # Evaluation: every test image exactly once over both processes, same NLL.
    (final_eval,) = two_process_runs["run1_eval"]
    assert final_eval["step"] == 4
    assert final_eval["eval/num_images"] == setup["spec"].num_test
    assert final_eval["eval/nll"] == pytest.approx(reference["eval"]["eval/nll"], rel=1e-5)

    # --- Only process 0 writes metrics and images (_train_losses fails on duplicated rows).
    assert two_process_runs["images"] == ["completions_00000004.png", "samples_00000004.png"]
    first, second = two_process_runs["run1_outputs"]
    assert "Wrote " in first and "samples_00000004.png" in first
    assert "Wrote " not in second
    devices = two_process_runs["run_info"]["devices"]
    assert devices["process_count"] == NUM_PROCESSES and devices["device_count"] == 2

    # --- The checkpoint holds every process's data position, tagged with its index.
    assert two_process_runs["checkpoint_steps_after_run1"] == ["2", "4"]
    meta = two_process_runs["data_meta"]
    assert meta["process_count"] == NUM_PROCESSES
    assert [entry["process_index"] for entry in meta["states"]] == [0, 1]
    for entry in meta["states"]:
        assert entry["state"]["next_batch"] == 4
        assert entry["state"]["process_count"] == NUM_PROCESSES

    # --- Run 2: both resumed from the step-4 checkpoint, stopped together on one SIGTERM.
    results = two_process_runs["run2_results"]
    stop_step = results[0]["step"]
    assert results == [{"step": stop_step, "preempted": True}] * NUM_PROCESSES
    assert stop_step >= 7
    for output in two_process_runs["run2_outputs"]:
        assert "Resumed from the checkpoint at step 4" in output
        assert f"Stopped at step {stop_step}" in output
    assert (two_process_runs["workdir"] / "checkpoints" / str(stop_step)).is_dir()
    # Each process's own copy of the parameters: bitwise identical.
    first, second = two_process_runs["params"]
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # The data streams continued where they stopped: per-step losses after the resume match.
    losses = _train_losses(two_process_runs["workdir"])
    assert sorted(losses) == list(range(1, stop_step + 1))
    for step in range(5, stop_step + 1):
        assert losses[step] == pytest.approx(reference["losses"][step], rel=1e-4), step
    # And they are the 1-device parameters after the same global batches.
    paths, _ = jax.tree_util.tree_flatten_with_path(reference["params"][stop_step])
    expected = {jax.tree_util.keystr(path): value for path, value in paths}
    assert expected.keys() == first.keys()
    assert _max_rel_diff(first, expected) < 1e-4


def _bad_setups(setup) -> dict:
    """Starts the three bad setups at once; returns {name: (return codes, outputs, seconds)}."""
    root, env = setup["root"] / "bad", setup["env"]
    overrides = _overrides(setup["data_dir"], num_steps=2)
    unreachable, lonely, unshared = _free_port(), _free_port(), _free_port()
    runs = {
        # Process 1 of 2, and nothing listens at the coordinator's port.
        "unreachable": [
            _train_command(root / "u", unreachable, 1, overrides, "--distributed_timeout=3")
        ],
        # Process 0 of 2 serves the coordinator, but process 1 never comes.
        "no_peer": [_train_command(root / "p", lonely, 0, overrides, "--distributed_timeout=3")],
        # Two processes joined, each with its own workdir (as if on two hosts' local disks).
        "unshared": [
            _train_command(root / f"w{i}", unshared, i, overrides, "--distributed_timeout=60")
            for i in range(NUM_PROCESSES)
        ],
    }
    start = time.monotonic()
    launched = {name: _Processes(cmds, env, root / name) for name, cmds in runs.items()}
    finished = {}
    try:
        while len(finished) < len(launched):
            for name, procs in launched.items():
                if name not in finished and all(p.poll() is not None for p in procs.procs):
                    finished[name] = time.monotonic() - start
            if time.monotonic() - start > RUN_TIMEOUT_S:
                logs = "\n".join(p.report() for p in launched.values())
                pytest.fail(f"bad setups still running after {RUN_TIMEOUT_S} s:\n{logs}")
            time.sleep(0.1)
    finally:
        for procs in launched.values():
            procs.kill()
    return {
        name: (
            [p.returncode for p in procs.procs],
            [procs.output(i) for i in range(len(procs.procs))],
            finished[name],
        )
        for name, procs in launched.items()
    }


def test_bad_multi_process_setups_fail_early_and_clearly(setup):
    bad_setups = _bad_setups(setup)

    # --- Process 1 cannot reach the coordinator: a message naming it, within the timeout
    # (a user-facing error: the entry point prints it without a traceback).
    (code,), (output,), seconds = bad_setups["unreachable"]
    assert code == 1, output
    assert "Error: Process 1 could not reach the JAX coordinator at " in output
    assert "Traceback" not in output
    assert "within 3 s" in output and "Check that process 0 is running" in output
    assert seconds < 60  # interpreter start + 3 s of probing, on a loaded machine

    # --- Process 0's peer never joins: JAX ends the process after the timeout.
    (code,), (output,), seconds = bad_setups["no_peer"]
    assert code != 0, output
    # JAX ends the process itself (a C++ check failure, no Python exception); the line the
    # runner logged just before says what happened and what to check.
    assert "Joining a multi-process run as process 0 of 2 via 127.0.0.1:" in output
    assert "not every process joined in time" in output
    assert "DEADLINE_EXCEEDED" in output and "RegisterTask" in output
    assert seconds < 60

    # --- Two processes with a workdir each (as on two hosts' local disks).
    codes, outputs, _ = bad_setups["unshared"]
    for code, output in zip(codes, outputs, strict=True):
        assert code == 1, output
        assert "is not shared: process(es) [1] of 2 cannot see the file" in output
