"""Fault matrix of the runner (issue 16): every way a checkpoint, a save or a workdir breaks.

For each fault, rerunning the same command must resume from the newest checkpoint that
restores completely, move (never delete) whatever is unreadable to checkpoints_corrupt/
with a one-line message, and end with bit-identical final parameters to a run without the
fault. Training is deterministic (the data position is checkpointed), so "a run without the
fault" is one good run continued to the same final step, whichever checkpoint the faulted
run resumed from.

One good 3-step run (a checkpoint with eval metrics at every step) is built once per module;
each case faults a copy of it. Compiled steps are shared through the persistent compilation
cache (also by the `python -m experiments.train` subprocesses), so a case costs about a
second in-process and a few seconds as a subprocess. The table in WORKSPACE_NOTES.md
("Fault matrix") is this file in words.
"""

import contextlib
import errno
import hashlib
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from experiments import cli, configs
from pixel_rnn_jax import checkpoints, errors, metric_logging, train, workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
FAULT_HOOKS = REPO / "tests" / "fault_hooks"  # a sitecustomize.py that SIGKILLs mid-save
GOOD_STEPS = 3  # the good run's checkpoints: 1, 2, 3 (each with eval metrics)
# Every train field the matrix runs override, for the in-process config and the CLI alike.
TRAIN = {
    "num_samples": 0,
    "eval_max_batches": 1,
    "eval_every": 1,  # every checkpoint carries a metrics item
    "checkpoint_every": 1,
    "keep_checkpoints": 10,
    "log_every": 1,
}


def _config(num_steps: int, **train_overrides):
    config = configs.get_config("row_lstm_mnist_smoke")
    for key, value in {**TRAIN, "num_steps": num_steps, **train_overrides}.items():
        config.train[key] = value
    return config


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, compilation_cache):
    """A finished, unfaulted 3-step run: checkpoints 1, 2, 3 with metrics."""
    del compilation_cache
    path = tmp_path_factory.mktemp("good") / "run"
    train.train_and_evaluate(_config(GOOD_STEPS), str(path))
    assert sorted(os.listdir(path / "checkpoints")) == ["1", "2", "3"]
    return path


@pytest.fixture(scope="module")
def reference(good_run, tmp_path_factory):
    """`reference(n)`: final params of the good run continued, unfaulted, to step n."""
    cache = {}

    def params(num_steps: int):
        if num_steps not in cache:
            path = tmp_path_factory.mktemp("reference") / "run"
            shutil.copytree(good_run, path)
            _, state = train.train_and_evaluate(_config(num_steps), str(path), return_state=True)
            cache[num_steps] = jax.tree.map(np.asarray, state.params)
        return cache[num_steps]

    return params


@pytest.fixture
def run_dir(good_run, tmp_path):
    """A private copy of the good run for one fault case."""
    path = tmp_path / "run"
    shutil.copytree(good_run, path)
    return path


def _rerun(path, num_steps=GOOD_STEPS + 1, **train_overrides):
    """Reruns the run in `path` in-process; returns (result, host params)."""
    config = _config(num_steps, **train_overrides)
    result, state = train.train_and_evaluate(config, str(path), return_state=True)
    return result, jax.tree.map(np.asarray, state.params)


def _assert_same_params(params, expected):
    jax.tree.map(np.testing.assert_array_equal, params, expected)


def _resumed_from(log_text: str) -> int | None:
    """The step the runner logged resuming from, or None if it started from scratch."""
    found = re.findall(r"Resumed from the checkpoint at step (\d+)", log_text)
    if found:
        return int(found[-1])
    assert "starting from scratch" in log_text, log_text[-3000:]
    return None


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (what "nothing lost" compares)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _quarantined(path) -> list[pathlib.Path]:
    folder = pathlib.Path(path) / checkpoints.QUARANTINE_SUBDIR
    return sorted(folder.iterdir()) if folder.exists() else []


# --- The file matrix: each file of each item, and Orbax's own metadata files -------------

# Files of one checkpoint as Orbax 0.12.8 writes them; `*` stands for the content-hashed
# data files of the OCDBT store (all of them are faulted together).
CHECKPOINT_FILES = (
    "_CHECKPOINT_METADATA",
    "commit_success.txt",
    "state/_METADATA",
    "state/_sharding",
    "state/manifest.ocdbt",
    "state/d/*",
    "state/array_metadatas/process_0",
    "state/ocdbt.process_0/manifest.ocdbt",
    "state/ocdbt.process_0/d/*",
    "state/commit_success.txt",
    "data/metadata",
    "data/commit_success.txt",
    "metrics/metrics",
    "metrics/commit_success.txt",
)
FAULTS = ("random", "empty", "deleted")
# (file, fault) pairs after which the checkpoint no longer restores: it is set aside whole
# and the run resumes from the one before. Every other pair restores bit-exactly (the final
# parameters prove it) and is resumed from, because Orbax does not need that file to restore
# the runner's state: the runner's restore target carries the shardings (so `_sharding` is
# not read), missing array metadata is rebuilt, the `ocdbt.process_0` manifest was merged
# into the top-level one when the save finished, and on a local or FUSE filesystem the
# commit is the folder's rename (`commit_success.txt` is informational). A damaged `metrics`
# file only makes the checkpoint one "without metrics".
SETS_ASIDE_WHOLE = {
    (name, fault)
    for name in (
        "state/_METADATA",
        "state/manifest.ocdbt",
        "state/d/*",
        "state/ocdbt.process_0/d/*",  # the data files the merged manifest points to
        "data/metadata",
    )
    for fault in FAULTS
} | {("state/array_metadatas/process_0", "random"), ("state/array_metadatas/process_0", "empty")}


def _apply(step_dir: pathlib.Path, pattern: str, fault: str, rng: np.random.Generator):
    files = sorted(step_dir.glob(pattern))
    assert files, f"{pattern} matches nothing in {step_dir}: Orbax's layout changed"
    for file in files:
        if fault == "random":
            file.write_bytes(rng.integers(0, 256, max(file.stat().st_size, 64), np.uint8).tobytes())
        elif fault == "empty":
            file.write_bytes(b"")
        else:
            file.unlink()


def test_the_matrix_covers_every_file_orbax_writes(good_run):
    step_dir = good_run / "checkpoints" / str(GOOD_STEPS)
    covered = {p for pattern in CHECKPOINT_FILES for p in step_dir.glob(pattern)}
    files = {p for p in step_dir.rglob("*") if p.is_file()}
    assert files == covered, f"not in the matrix: {sorted(map(str, files - covered))}"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_file_of_the_newest_checkpoint(run_dir, reference, caplog, name, fault):
    newest = run_dir / "checkpoints" / str(GOOD_STEPS)
    seed = int(hashlib.sha256(f"{name}:{fault}".encode()).hexdigest()[:8], 16)
    _apply(newest, name, fault, np.random.default_rng(seed))
    damaged = _snapshot(newest)
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir)
    _assert_same_params(params, reference(GOOD_STEPS + 1))
    moved = _quarantined(run_dir)
    if (name, fault) in SETS_ASIDE_WHOLE:
        assert _resumed_from(caplog.text) == GOOD_STEPS - 1
        # Moved, not deleted: the damaged checkpoint is there byte for byte.
        assert [p.name.split("-")[0] for p in moved] == [str(GOOD_STEPS)]
        assert _snapshot(moved[0]) == damaged
        assert f"Moved {newest} to {moved[0]}" in caplog.text
    elif name == "metrics/metrics" and fault != "deleted":
        # Unreadable metrics: the checkpoint counts as having none; only that item moves.
        assert _resumed_from(caplog.text) == GOOD_STEPS
        assert [p.name.split("-")[:2] for p in moved] == [[str(GOOD_STEPS), "metrics"]]
        assert f"Moved {newest / 'metrics'} to {moved[0]}" in caplog.text
        assert _snapshot(moved[0])["metrics"] == damaged["metrics/metrics"]
    else:
        assert _resumed_from(caplog.text) == GOOD_STEPS
        assert moved == []


@pytest.mark.parametrize("item", ["state", "data", "metrics"])
def test_deleted_item_folder_of_the_newest_checkpoint(run_dir, reference, caplog, item):
    shutil.rmtree(run_dir / "checkpoints" / str(GOOD_STEPS) / item)
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir)
    _assert_same_params(params, reference(GOOD_STEPS + 1))
    if item == "metrics":  # a checkpoint without metrics is a valid checkpoint
        assert _resumed_from(caplog.text) == GOOD_STEPS and _quarantined(run_dir) == []
    else:
        assert _resumed_from(caplog.text) == GOOD_STEPS - 1
        assert [p.name.split("-")[0] for p in _quarantined(run_dir)] == [str(GOOD_STEPS)]


def test_unreadable_metrics_on_every_checkpoint_resume_without_a_best(run_dir, reference, caplog):
    for step in range(1, GOOD_STEPS + 1):
        (run_dir / "checkpoints" / str(step) / "metrics" / "metrics").write_bytes(b"\x88\xd6\xff")
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir)
    _assert_same_params(params, reference(GOOD_STEPS + 1))
    assert _resumed_from(caplog.text) == GOOD_STEPS
    assert len(_quarantined(run_dir)) == GOOD_STEPS
    # Best-checkpoint bookkeeping: only the new step has metrics, so it is the best.
    manager = checkpoints.CheckpointManager(str(run_dir), keep_last=10, read_only=True)
    try:
        assert [s for s in manager.all_steps() if manager.metrics(s)] == [GOOD_STEPS + 1]
        assert manager.best_step() == GOOD_STEPS + 1
    finally:
        manager.close()


def test_folder_left_without_its_commit_rename(run_dir, reference, caplog):
    # A crash mid-save leaves `<step>.orbax-checkpoint-tmp`: on a local filesystem the
    # rename is Orbax's commit marker. Make step 3 look like that.
    newest = run_dir / "checkpoints" / str(GOOD_STEPS)
    unfinished = newest.with_name(f"{GOOD_STEPS}.orbax-checkpoint-tmp")
    newest.rename(unfinished)
    content = _snapshot(unfinished)
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir)
    _assert_same_params(params, reference(GOOD_STEPS + 1))
    assert _resumed_from(caplog.text) == GOOD_STEPS - 1
    (moved,) = _quarantined(run_dir)
    assert moved.name.startswith(unfinished.name) and _snapshot(moved) == content
    assert f"Moved {unfinished} to {moved}: unfinished checkpoint save" in caplog.text


# --- Every checkpoint unreadable ----------------------------------------------------------

ALL_UNREADABLE = [("state/manifest.ocdbt", "random"), ("data/metadata", "deleted")]


@pytest.mark.parametrize(("name", "fault"), ALL_UNREADABLE)
def test_every_checkpoint_unreadable_refuses_then_starts_fresh_only_when_asked(
    run_dir, reference, caplog, name, fault
):
    for step in range(1, GOOD_STEPS + 1):
        _apply(run_dir / "checkpoints" / str(step), name, fault, np.random.default_rng(step))
    before = _snapshot(run_dir / "checkpoints")
    with pytest.raises(errors.CheckpointError, match="None of the checkpoints") as error:
        _rerun(run_dir)
    assert "--config.train.start_fresh=True" in str(error.value)
    assert _snapshot(run_dir / "checkpoints") == before and _quarantined(run_dir) == []

    # Asked explicitly: all of them move aside (byte for byte) and training starts at 0.
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir, start_fresh=True)
    assert _resumed_from(caplog.text) is None
    moved = _quarantined(run_dir)
    assert sorted(p.name.split("-")[0] for p in moved) == ["1", "2", "3"]
    for folder in moved:
        for rel, digest in _snapshot(folder).items():
            assert before[f"{folder.name.split('-')[0]}/{rel}"] == digest
    # A fresh run is deterministic: the same parameters as the good run continued.
    _assert_same_params(params, reference(GOOD_STEPS + 1))


def test_every_checkpoint_unreadable_via_the_cli_is_a_message_not_a_traceback(
    run_dir, compilation_cache
):
    for step in range(1, GOOD_STEPS + 1):
        shutil.rmtree(run_dir / "checkpoints" / str(step) / "state")
    result = subprocess.run(
        _cli(run_dir, GOOD_STEPS + 1),
        cwd=REPO,
        env=_env(compilation_cache),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == cli.EXIT_USER_ERROR, result.stderr[-3000:]
    assert "Error: None of the checkpoints in" in result.stderr
    assert "--config.train.start_fresh=True" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["1", "2", "3"]


# --- Disk full during a save ---------------------------------------------------------------


def test_disk_full_during_a_save_stops_clearly_and_keeps_every_checkpoint(
    run_dir, reference, monkeypatch, caplog
):
    # Where a real full disk (a 200 KB tmpfs) failed under Orbax 0.12.8: its background
    # thread writing files of the step's temporary folder (then commit_success.txt).
    from orbax.checkpoint._src.path import async_path  # noqa: PLC0415

    failing_step = GOOD_STEPS + 1
    original = async_path.write_text

    async def write_text(path, text, *args, **kwargs):
        if f"/{failing_step}.orbax-checkpoint-tmp" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await original(path, text, *args, **kwargs)

    monkeypatch.setattr(async_path, "write_text", write_text)
    good = {s: _snapshot(run_dir / "checkpoints" / str(s)) for s in range(1, GOOD_STEPS + 1)}
    # keep_checkpoints=1: the save of step 4 would delete steps 1-2 once it committed.
    with pytest.raises(errors.DiskFullError) as error:
        _rerun(run_dir, num_steps=GOOD_STEPS + 3, keep_checkpoints=1)
    message = str(error.value)
    assert f"No space left on device while saving the checkpoint of step {failing_step}" in message
    assert "rerun the same command" in message and "resumes from step 3" in message
    assert errors.user_message(error.value) == message  # the CLI prints it, no traceback
    for step, content in good.items():  # every earlier checkpoint intact, byte for byte
        assert _snapshot(run_dir / "checkpoints" / str(step)) == content
    monkeypatch.undo()

    # Space freed: the same command resumes from step 3 (setting the unfinished save aside).
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir, num_steps=GOOD_STEPS + 3, keep_checkpoints=1)
    assert _resumed_from(caplog.text) == GOOD_STEPS
    assert [p.name.split(".")[0] for p in _quarantined(run_dir)] == [str(failing_step)]
    _assert_same_params(params, reference(GOOD_STEPS + 3))


# --- The workdir: checked before any training or writing ----------------------------------


@contextlib.contextmanager
def _read_only(folder: pathlib.Path):
    """Makes `folder` unwritable for this process: chmod, or for root `chattr +i`."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not shutil.which("chattr"):
        pytest.skip("running as root without chattr: no way to make a folder read-only")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["workdir", "checkpoints"])
def test_read_only_workdir_is_refused_before_anything_happens(run_dir, where, caplog):
    folder = run_dir if where == "workdir" else run_dir / "checkpoints"
    before = _snapshot(run_dir)
    expected = pytest.raises(errors.WorkdirError, match=f"cannot write in {folder}")
    with caplog.at_level(logging.INFO), _read_only(folder), expected:
        _rerun(run_dir)
    assert _snapshot(run_dir) == before
    assert "Resumed from" not in caplog.text and "First step" not in caplog.text


def test_config_json_of_another_model_is_refused_before_anything_happens(run_dir, caplog):
    before = _snapshot(run_dir)
    config = _config(GOOD_STEPS + 1)
    config.model.hidden_dim = 8
    with caplog.at_level(logging.INFO):
        with pytest.raises(errors.WorkdirError, match="holds a run of a different model") as e:
            train.train_and_evaluate(config, str(run_dir))
        # Evaluation says the same instead of calling every checkpoint unreadable.
        with pytest.raises(errors.WorkdirError, match="different model"):
            train.load_checkpoint(config, str(run_dir))
    assert "model.hidden_dim: 4 there, 8 here" in str(e.value)
    assert "--config.model.hidden_dim=4" in str(e.value)
    assert _snapshot(run_dir) == before
    assert "Resumed from" not in caplog.text and "First step" not in caplog.text


def test_model_differences_ignore_execution_only_and_unused_fields():
    base = configs.get_config("row_lstm_mnist_smoke").model.to_dict()
    assert workdir.model_differences(base, base) == {}
    assert workdir.model_differences(base, {**base, "unroll": "full"}) == {}
    # A schedule lays the recurrences out, never the parameters; older runs recorded none.
    assert workdir.model_differences(base, {**base, "schedule": "latency"}) == {}
    # Parameters are float32 under either dtype: a checkpoint resumes under the other one.
    assert workdir.model_differences(base, {**base, "dtype": "bfloat16", "remat": True}) == {}
    multiscale = {**base["multiscale"], "factor": 4}
    assert workdir.model_differences(base, {**base, "multiscale": multiscale}) == {}
    assert workdir.model_differences(base, {**base, "name": "multiscale", "multiscale": multiscale})
    assert workdir.model_differences(base, {**base, "num_layers": 2}) == {"num_layers": (1, 2)}


# --- The entry points: user errors are a message, bugs keep their traceback ----------------


@pytest.mark.parametrize(
    "error",
    [
        errors.CheckpointError("none restores"),
        errors.DiskFullError("disk full"),
        errors.WorkdirError("read-only"),
        errors.ConfigError("unknown config"),
        errors.DatasetNotPreparedError("prepare it"),
        errors.DistributedSetupError("no coordinator"),
        errors.TrainingDivergedError("diverged at step 3"),
        errors.NoCheckpointError("train first"),
        OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl"),
    ],
)
def test_cli_prints_user_errors_and_exits_1(capsys, error):
    def main(argv):
        del argv
        raise error

    with pytest.raises(SystemExit) as exit_info:
        cli.report_user_errors(main)(["prog"])
    assert exit_info.value.code == cli.EXIT_USER_ERROR
    stderr = capsys.readouterr().err
    assert stderr.startswith("Error: ") and str(error) in stderr


def test_cli_keeps_the_traceback_of_unexpected_errors():
    def main(argv):
        del argv
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        cli.report_user_errors(main)(["prog"])


def test_user_errors_are_still_their_old_types():
    # Code that caught the old built-in types keeps working; old import paths still work.
    from pixel_rnn_jax import data, parallel  # noqa: PLC0415

    assert issubclass(data.DatasetNotPreparedError, ValueError)
    assert issubclass(parallel.DistributedSetupError, RuntimeError)
    assert issubclass(train.TrainingDivergedError, FloatingPointError)
    assert issubclass(checkpoints.CheckpointError, RuntimeError)
    assert issubclass(errors.NoCheckpointError, FileNotFoundError)
    assert data.DatasetNotPreparedError is errors.DatasetNotPreparedError
    with pytest.raises(ValueError, match="Unknown config"):
        configs.get_config("no_such_config")


# --- Real processes: SIGKILL mid-save, SIGTERM twice, SIGTERM while compiling ---------------


def _cli(path, num_steps, *flags):
    """`python -m experiments.train` with the matrix's train settings."""
    overrides = {**TRAIN, "num_steps": num_steps}
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=row_lstm_mnist_smoke",
        f"--workdir={path}",
        *(f"--config.train.{key}={value}" for key, value in overrides.items()),
        *flags,
    ]


def _env(compilation_cache, **extra):
    env = {**os.environ, **extra}
    if compilation_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = compilation_cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    else:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


class _Process:
    """A `python -m experiments.train` child whose output lines are collected as they come."""

    def __init__(self, command, env):
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.popen.poll() is None, f"exited before {what}:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.05)

    def finish(self, timeout: float = 180) -> int:
        try:
            code = self.popen.wait(timeout=timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
        self._reader.join(timeout=10)
        return code


def _line_index(lines, text):
    return next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize(
    ("moment", "resumes_from"),
    [("before", GOOD_STEPS), ("during", GOOD_STEPS), ("after", GOOD_STEPS + 1)],
)
def test_sigkill_while_saving(run_dir, reference, compilation_cache, caplog, moment, resumes_from):
    killed_at = GOOD_STEPS + 1
    env = _env(
        compilation_cache, PYTHONPATH=str(FAULT_HOOKS), PIXEL_RNN_TEST_KILL=f"{moment}:{killed_at}"
    )
    child = _Process(_cli(run_dir, GOOD_STEPS + 2), env)
    assert child.finish() == -signal.SIGKILL, child.output[-3000:]
    assert f"fault_hooks: SIGKILL {moment} the save of step {killed_at}" in child.output
    left = sorted(os.listdir(run_dir / "checkpoints"))
    if moment == "during":
        assert f"{killed_at}.orbax-checkpoint-tmp" in left  # what a crash mid-save leaves
    assert (str(killed_at) in left) == (moment == "after")

    # The same command again (here in-process): resumes from the newest complete checkpoint.
    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir, num_steps=GOOD_STEPS + 2)
    assert _resumed_from(caplog.text) == resumes_from
    unfinished = [p.name for p in _quarantined(run_dir)]
    assert len(unfinished) == (1 if moment == "during" else 0), unfinished
    _assert_same_params(params, reference(GOOD_STEPS + 2))


def _stopped_step(output: str) -> int:
    stopped = re.findall(r"^Stopped at step (\d+)", output, flags=re.MULTILINE)
    assert len(stopped) == 1, output[-3000:]
    return int(stopped[0])


def test_sigterm_twice_saves_once_and_exits_cleanly(run_dir, reference, compilation_cache, caplog):
    # A slow disk (each save takes 2 s longer) holds the stop's save open, so that the second
    # SIGTERM arrives while the loop has ended and that save is still being written: it must
    # neither kill the process nor the save.
    env = _env(compilation_cache, PYTHONPATH=str(FAULT_HOOKS), PIXEL_RNN_TEST_SLOW_SAVE="2")
    child = _Process(_cli(run_dir, 1_000_000), env)
    # Under way: the first new step's metrics are written.
    child.wait_for(
        lambda: any(r["step"] > GOOD_STEPS for r in metric_logging.read_metrics(str(run_dir))),
        "training",
    )
    child.popen.send_signal(signal.SIGTERM)
    # The second one once the loop has stopped: the stop's save is still being written.
    child.wait_for(lambda: "on request (SIGTERM" in child.output, "the loop to stop")
    child.popen.send_signal(signal.SIGTERM)
    assert child.finish() == 0, child.output[-3000:]
    assert child.output.count("Received signal 15") == 2, child.output[-3000:]
    step = _stopped_step(child.output)
    assert GOOD_STEPS < step < 1_000_000
    assert max(map(int, os.listdir(run_dir / "checkpoints"))) == step

    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir, num_steps=step + 1)
    assert _resumed_from(caplog.text) == step
    assert _quarantined(run_dir) == []  # the save the second signal hit was complete
    _assert_same_params(params, reference(step + 1))


def test_sigterm_during_the_first_compilation(run_dir, reference, caplog):
    # No compilation cache for this child, so that its first step compiles for seconds.
    child = _Process(_cli(run_dir, 1_000_000), _env(None))
    child.wait_for(lambda: any("parameters; dataset" in line for line in child.lines), "start")
    time.sleep(0.1)  # past installing the handler (just after that line), inside compilation
    child.popen.send_signal(signal.SIGTERM)
    assert child.finish() == 0, child.output[-3000:]
    # The signal arrived before the first step (compilation included) had finished.
    assert _line_index(child.lines, "Received signal 15") < _line_index(
        child.lines, "First step (including compilation) took"
    )
    step = _stopped_step(child.output)
    assert step == GOOD_STEPS + 1  # saved right after the step that was compiling

    with caplog.at_level(logging.INFO):
        _, params = _rerun(run_dir, num_steps=step + 1)
    assert _resumed_from(caplog.text) == step
    _assert_same_params(params, reference(step + 1))
