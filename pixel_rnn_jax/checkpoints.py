"""Orbax checkpoints of a training run: save, keep last-N plus best, resume, damage handling.

Layout under `workdir/checkpoints/<step>/` (one Orbax composite checkpoint per step):
  state/     the train state (step, params, optimiser state), `ocp.args.StandardSave`
  data/      JSON: every process's data-iterator state (tagged with its process index), so
             resuming continues each process's data stream exactly where it stopped
  metrics/   JSON: `{'eval/nll': ...}` when the step was evaluated (Orbax's best tracking)

Retention is the union of two Orbax preservation policies: the last `keep_last` steps, and
the single best step by eval NLL among steps that carry metrics. So the latest checkpoint is
never deleted in favour of the best one and the best one is never deleted in favour of newer
ones.

Damage (see the "Fault matrix" in WORKSPACE_NOTES.md). Nothing is ever deleted: whatever
cannot be used is moved to `workdir/checkpoints_corrupt/` with a one-line log message that
says what moved and where, and the run resumes from the newest checkpoint that restores.
  * A checkpoint whose `state` or `data` does not restore (truncated, random or missing
    files, a missing item folder) is moved aside whole, after an older one has restored.
  * A checkpoint whose `metrics` item is unreadable is treated as having no metrics: only
    that item is moved aside (before Orbax lists the steps, which otherwise dies on it), and
    the checkpoint stays usable for resuming. We keep it rather than set the whole
    checkpoint aside because its train state is intact: losing training progress for the
    sake of a bookkeeping number would be the worse trade. It just can no longer be "best".
  * An unfinished save (an `<step>.orbax-checkpoint-tmp*` folder, which is how a process
    killed mid-save leaves it: on a local or FUSE filesystem Orbax commits a checkpoint by
    renaming that folder) is moved aside. Orbax's own clean-up would delete it.
  * When checkpoints exist but none restores, the run refuses to start (`CheckpointError`)
    and moves nothing, unless asked to start fresh (`start_fresh=True`), which moves them
    all aside first.
  * A save that fails because the disk is full raises `DiskFullError`: Orbax deletes old
    checkpoints only after a new one is committed, so every earlier checkpoint stays intact.

Multi-process (Orbax 0.12.8 semantics): every process calls `save` and `restore` with the
same step; Orbax synchronises them with barriers, each process writes the array shards it
owns (replicated arrays once, from the process holding replica 0), and the primary host
(process 0) writes the JSON items and metadata and finalises the step directory. So the
checkpoint directory must be one shared location (the same path on every host). Moving
things aside is done by process 0 alone, followed by a barrier.
"""

import contextlib
import dataclasses
import json
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from pixel_rnn_jax.errors import CheckpointError, DiskFullError, is_disk_full

STATE_ITEM = "state"
DATA_ITEM = "data"
METRICS_ITEM = "metrics"  # Orbax's own item (folder and file name) for `save(metrics=...)`
BEST_METRIC = "eval/nll"  # lower is better
CHECKPOINT_SUBDIR = "checkpoints"
QUARANTINE_SUBDIR = "checkpoints_corrupt"
_TMP_MARKER = ".orbax-checkpoint-tmp"

__all__ = [
    "BEST_METRIC",
    "CHECKPOINT_SUBDIR",
    "CheckpointError",
    "CheckpointManager",
    "DiskFullError",
    "QUARANTINE_SUBDIR",
    "Restored",
]


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored checkpoint.

    Attributes:
      step: the step it was saved at.
      state: the train state, placed like the abstract target's shardings.
      data_state: this process's data-iterator state (JSON), or None if the checkpoint was
        written by a different number of processes.
      skipped_steps: newer steps that could not be restored (moved to the quarantine dir).
    """

    step: int
    state: Any
    data_state: Any
    skipped_steps: tuple[int, ...] = ()


def _all_processes_json(value: Any) -> list[Any]:
    """Gathers a JSON-serialisable value from every process (in process order)."""
    if jax.process_count() == 1:
        return [value]
    # JSON bytes as a padded uint8 array: the only thing process_allgather moves.
    data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([data.size], np.int32))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[: data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    return [
        json.loads(bytes(row[: int(n)]).decode())
        for row, n in zip(gathered, np.ravel(lengths), strict=True)
    ]


def _own_data_state(states: list[Any], step: int) -> Any:
    """This process's entry of a checkpoint's gathered data-iterator states."""
    index = jax.process_index()
    tagged = [s for s in states if isinstance(s, dict) and s.keys() == {"process_index", "state"}]
    if len(tagged) != len(states):  # written before entries were tagged: gather order
        return states[index]
    mine = [s["state"] for s in tagged if s["process_index"] == index]
    if len(mine) != 1:
        raise ValueError(
            f"checkpoint {step} has {len(mine)} data-iterator states for process {index} "
            f"(processes {[s['process_index'] for s in tagged]})"
        )
    return mine[0]


def metrics_problem(metrics: Any) -> str | None:
    """Why a checkpoint's parsed metrics cannot drive best-checkpoint tracking, or None.

    Orbax's best tracking indexes `metrics[BEST_METRIC]` and compares the values, so valid
    JSON of the wrong shape would fail later, inside a save; it counts as unreadable too.
    """
    if not isinstance(metrics, Mapping):
        return f"expected a JSON object, got {type(metrics).__name__}"
    value = metrics.get(BEST_METRIC)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{BEST_METRIC!r} is {value!r}, not a number"
    return None


# A metrics item is a few hundred bytes; a larger one is unreadable (not read).
MAX_METRICS_BYTES = 1 << 16


def read_metrics_file(path: epath.Path) -> tuple[Mapping[str, float] | None, str | None]:
    """Reads a checkpoint's `metrics/metrics` JSON file.

    Args:
      path: the file.

    Returns:
      (metrics, None) when readable; (None, None) when the file does not exist (a step that
      was not evaluated); (None, reason) when it exists but cannot be used.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_METRICS_BYTES + 1)
        if len(data) > MAX_METRICS_BYTES:
            return None, f"more than {MAX_METRICS_BYTES} bytes (not read)"
        metrics = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return None, None
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError: JSON nested
    # deeper than the parser's stack.
    except (OSError, ValueError, RecursionError) as error:
        return None, f"{type(error).__name__}: {str(error)[:200]}"
    problem = metrics_problem(metrics)
    return (None, problem) if problem else (metrics, None)


class _OrbaxManager(ocp.CheckpointManager):
    """Orbax's manager, reading an unreadable metrics item as "no metrics".

    Orbax 0.12.8 reads every step's metrics while it lists the steps (in `__init__` and
    `reload`) and tolerates only a missing file: random bytes raise UnicodeDecodeError and an
    empty file JSONDecodeError, so the run could not even start. A writable manager moves
    such items aside before Orbax looks (`CheckpointManager._set_aside_damage`); this
    override covers read-only managers (evaluation next to a live run), which must not move
    anything. `_get_metrics` is Orbax's private hook: tests/test_fault_matrix.py fails if a
    new Orbax stops calling it.
    """

    def _get_metrics(self, step: int):
        path = self._get_read_step_directory(step, self.directory) / METRICS_ITEM / METRICS_ITEM
        metrics, problem = read_metrics_file(path)
        if problem:
            logging.warning(
                "Checkpoint %d: metrics file %s is unreadable (%s); treating the step as "
                "having no metrics.",
                step,
                path,
                problem[:300],
            )
        return metrics


class CheckpointManager:
    """Saves and restores (train state, data-iterator state) under `workdir/checkpoints`."""

    def __init__(
        self, workdir: str, *, keep_last: int, async_save: bool = True, read_only: bool = False
    ):
        """Opens (or creates) the checkpoint directory of a run.

        Args:
          workdir: the run's work directory.
          keep_last: how many most recent checkpoints to keep (the best one is kept on top).
          async_save: write in a background thread (Orbax's default); the train loop
            continues while arrays are written.
          read_only: for evaluation/sampling next to a live run: never writes, moves or
            deletes anything (not even a training run's in-progress save).
        """
        self.read_only = read_only
        if keep_last < 1:
            raise ValueError(
                f"train.keep_checkpoints must be >= 1 (got {keep_last}): resuming needs the latest."
            )
        root = epath.Path(workdir)
        if not root.is_absolute():  # Orbax restores only from absolute paths
            root = epath.Path(os.path.abspath(workdir))
        self.directory = root / CHECKPOINT_SUBDIR
        self.quarantine_directory = root / QUARANTINE_SUBDIR
        self._in_flight_step: int | None = None  # the step whose async save may be running
        self._set_aside_damage()
        preservation = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=keep_last),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    reverse=True,  # BestN keeps the tail of the sort; descending -> lowest NLL.
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            # best_fn/best_mode make Orbax write the metrics item and answer best_step().
            best_fn=lambda metrics: metrics[BEST_METRIC],
            best_mode="min",
            preservation_policy=preservation,
            create=not read_only,
            # Unfinished saves were moved aside above; Orbax would delete them.
            cleanup_tmp_directories=False,
            enable_async_checkpointing=async_save,
            read_only=read_only,
        )
        self._manager = _OrbaxManager(
            self.directory, options=options, item_names=(STATE_ITEM, DATA_ITEM)
        )

    def _set_aside_damage(self):
        """Moves unfinished saves and unreadable metrics items aside (reports them if read-only).

        Runs before Orbax lists the steps: Orbax would delete the unfinished saves and, on
        random bytes in a metrics file, fail to list anything.
        """
        if jax.process_index() == 0 and self.directory.is_dir():
            for path in sorted(self.directory.iterdir(), key=lambda p: p.name):
                if _TMP_MARKER in path.name:
                    self._move_aside(
                        path,
                        path.name,
                        "unfinished checkpoint save (a process stopped while writing it); "
                        "it was never a checkpoint",
                    )
                elif path.name.isdigit() and path.is_dir():
                    _, problem = read_metrics_file(path / METRICS_ITEM / METRICS_ITEM)
                    if problem:
                        self._move_aside(
                            path / METRICS_ITEM,
                            f"{path.name}-{METRICS_ITEM}",
                            f"unreadable metrics of checkpoint {path.name} ({problem[:200]}); "
                            "the checkpoint is kept and counts as having no eval metrics",
                        )
        self._sync("pixel_rnn_jax_checkpoint_set_aside")

    def _move_aside(self, source: epath.Path, name: str, why: str) -> epath.Path | None:
        """Renames `source` into the quarantine dir (never deletes); one log line either way."""
        if self.read_only:
            logging.warning("Read-only, so left in place: %s: %s.", source, why)
            return None
        self.quarantine_directory.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        target, count = self.quarantine_directory / stem, 1
        while target.exists():  # the same step set aside twice within a second
            count += 1
            target = self.quarantine_directory / f"{stem}-{count}"
        source.rename(target)
        logging.warning("Moved %s to %s: %s.", source, target, why)
        return target

    @staticmethod
    def _sync(name: str):
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(name)

    def all_steps(self) -> list[int]:
        """Steps of the finished checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the lowest eval NLL among checkpoints that carry metrics, or None.

        Computed here from `metrics` (readable ones only) rather than asked of Orbax, so that
        a checkpoint whose metrics are unreadable simply does not compete.
        """
        scored = [(m[BEST_METRIC], s) for s in self.all_steps() if (m := self.metrics(s))]
        return min(scored)[1] if scored else None

    def metrics(self, step: int) -> Mapping[str, float] | None:
        """The metrics saved with `step`, or None (not evaluated, or unreadable)."""
        return self._manager.metrics(step)

    def _disk_full(self, error: BaseException, step: int | None) -> DiskFullError:
        """The user-facing error for a save of `step` that failed on a full disk."""
        names = [p.name for p in self.directory.iterdir()] if self.directory.is_dir() else []
        on_disk = sorted(int(n) for n in names if n.isdigit() and int(n) != step)
        resume = (
            f"the checkpoints already on disk (steps {on_disk}) are untouched and a rerun "
            f"resumes from step {on_disk[-1]}"
            if on_disk
            else "no earlier checkpoint exists, so a rerun starts from step 0"
        )
        where = f"step {step}" if step is not None else "a step"
        return DiskFullError(
            f"No space left on device while saving the checkpoint of {where} to "
            f"{self.directory} ({error}). Training stopped; {resume}. The unfinished save is "
            f"moved to {self.quarantine_directory} when the run restarts. Free some space "
            "(or lower --config.train.keep_checkpoints), then rerun the same command."
        )

    def save(
        self,
        step: int,
        state: Any,
        data_state: Any,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Saves a checkpoint (all processes must call this with the same step).

        Args:
          step: the train step the state is at (number of updates applied).
          state: the train state pytree (global jax.Arrays).
          data_state: this process's data-iterator state (JSON-serialisable).
          metrics: eval metrics of this state, including `BEST_METRIC`, or None.

        Returns:
          False if a checkpoint for `step` already exists (nothing written), else True.

        Raises:
          DiskFullError: this save, or the previous one still being written, hit a full disk.
        """
        if step in self._manager.all_steps():
            return False
        # Every process's iterator state, gathered to all (only the primary host writes JSON
        # items) and tagged with its process index: restore picks its own by the tag, not by
        # trusting the gather order.
        states = _all_processes_json({"process_index": jax.process_index(), "state": data_state})
        data = {"process_count": jax.process_count(), "states": states}
        if metrics is not None:
            metrics = {key: float(value) for key, value in metrics.items()}
            if BEST_METRIC not in metrics:
                raise ValueError(f"Checkpoint metrics must include {BEST_METRIC!r}: {metrics}")
        args = ocp.args.Composite(
            **{STATE_ITEM: ocp.args.StandardSave(state), DATA_ITEM: ocp.args.JsonSave(data)}
        )
        # Orbax would wait for the previous save inside `save`; waiting here first names the
        # right step if that background write failed.
        self.wait_until_finished()
        try:
            # force=True: our loop decides when to save; Orbax's own interval policy would
            # silently skip a step it does not like.
            saved = self._manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as error:
            if is_disk_full(error):
                raise self._disk_full(error, step) from error
            raise
        self._in_flight_step = step if saved else None
        return saved

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores the checkpoint at `step` into the structure/shardings of `abstract_state`.

        Args:
          step: a step from `all_steps()`.
          abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) like the state.

        Returns:
          The restored checkpoint.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardRestore(abstract_state),
                    DATA_ITEM: ocp.args.JsonRestore(),
                }
            ),
        )
        data = restored[DATA_ITEM]
        if data is None or "states" not in data:
            raise ValueError(f"checkpoint {step} has no data-iterator state")
        data_state = None
        if data.get("process_count") == jax.process_count():
            data_state = _own_data_state(data["states"], step)
        else:
            logging.warning(
                "Checkpoint %d was written by %s process(es) but this run has %d: the data "
                "iterators cannot continue where they stopped and restart from the seed.",
                step,
                data.get("process_count"),
                jax.process_count(),
            )
        return Restored(step=step, state=restored[STATE_ITEM], data_state=data_state)

    def restore_latest(
        self, abstract_state: Any, *, which: str = "latest", start_fresh: bool = False
    ) -> Restored | None:
        """Restores the newest checkpoint that restores (or the best one), or None if none exist.

        Checkpoints newer than the one restored that fail to restore are reported and (unless
        read-only) moved to `quarantine_directory`, so that the resumed run can save those
        steps again.

        Args:
          abstract_state: see `restore`.
          which: 'latest' or 'best' (lowest eval NLL; falls back to latest if none has one).
          start_fresh: when checkpoints exist but none restores, move them all aside and
            return None (the caller starts from step 0) instead of raising.

        Returns:
          The restored checkpoint, or None when the directory holds no (usable) checkpoint.

        Raises:
          CheckpointError: checkpoints exist but none of them restores, and not
            `start_fresh` (nothing is moved).
          ValueError: `which` is not 'latest' or 'best'.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        candidates = sorted(self.all_steps(), reverse=True)
        best = self.best_step() if which == "best" else None
        if best is not None:
            candidates = [best] + [s for s in candidates if s != best]
        failures: list[tuple[int, str]] = []
        for step in candidates:
            try:
                restored = self.restore(step, abstract_state)
            except Exception as error:  # noqa: BLE001 - any failure means "not restorable"
                reason = f"{type(error).__name__}: {error}"
                logging.error(
                    "Checkpoint at step %d in %s cannot be restored (%s). Trying the previous one.",
                    step,
                    self.directory,
                    reason[:2000],
                )
                failures.append((step, reason))
                continue
            bad_newer = [s for s, _ in failures if s > step]
            if bad_newer and not self.read_only:
                self._quarantine(bad_newer)
                logging.warning(
                    "Resumed from step %d, the newest checkpoint that restores; unreadable "
                    "newer checkpoint(s) %s were moved to %s.",
                    step,
                    bad_newer,
                    self.quarantine_directory,
                )
            elif bad_newer:
                logging.warning(
                    "Using step %d, the newest checkpoint that restores (unreadable: %s).",
                    step,
                    bad_newer,
                )
            return dataclasses.replace(restored, skipped_steps=tuple(bad_newer))
        if not failures:
            return None
        steps = [s for s, _ in failures]
        if start_fresh and not self.read_only:
            self._quarantine(steps)
            logging.warning(
                "Starting from scratch as asked (start_fresh): none of the checkpoints %s "
                "restored; they were moved to %s.",
                steps,
                self.quarantine_directory,
            )
            return None
        how = (
            "Nothing was moved or deleted. To train from scratch in this workdir anyway, "
            "rerun with --config.train.start_fresh=True (the unreadable checkpoints are moved "
            f"to {self.quarantine_directory}, not deleted), or use a new --workdir."
            if not self.read_only
            else "Nothing was moved or deleted."
        )
        raise CheckpointError(
            f"None of the checkpoints in {self.directory} (steps {steps}) can be restored; "
            f"the newest failed with: {failures[0][1][:500]}. {how}"
        )

    def _quarantine(self, steps: list[int]):
        """Moves unreadable step directories out of the manager's sight (never deletes)."""
        self.wait_until_finished()
        if jax.process_index() == 0:
            for step in steps:
                source = self.directory / str(step)
                if source.exists():
                    self._move_aside(source, str(step), f"checkpoint {step} does not restore")
        self._sync("pixel_rnn_jax_checkpoint_quarantine")
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """True when JAX's multi-host preemption service asks all processes to save at `step`."""
        return self._manager.reached_preemption(step)

    def wait_until_finished(self):
        """Blocks until background saves are written (call before exiting).

        Raises:
          DiskFullError: the save in flight hit a full disk.
        """
        step, self._in_flight_step = self._in_flight_step, None
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            if is_disk_full(error):
                raise self._disk_full(error, step) from error
            raise

    def close(self):
        """Waits for saves and releases the manager's resources."""
        try:
            self.wait_until_finished()
        except BaseException:
            # The save's error is the one to report; a second one from closing would hide it.
            with contextlib.suppress(Exception):
                self._manager.close()
            raise
        self._manager.close()
