"""Orbax checkpoints of a training run: save, keep last-N plus best, resume, corrupt handling.

Layout under `workdir/checkpoints/<step>/` (one Orbax composite checkpoint per step):
  state/     the train state (step, params, optimiser state), `ocp.args.StandardSave`
  data/      JSON: every process's data-iterator state (tagged with its process index), so
             resuming continues each process's data stream exactly where it stopped
  metrics/   JSON: `{'eval/nll': ...}` when the step was evaluated (Orbax's best tracking)

Retention is the union of two Orbax preservation policies: the last `keep_last` steps, and
the single best step by eval NLL among steps that carry metrics. So the latest checkpoint is
never deleted in favour of the best one and the best one is never deleted in favour of newer
ones.

A checkpoint that cannot be restored (truncated files, a half-copied directory) is reported
with the error that restoring it raised, moved aside to `workdir/checkpoints_corrupt/` (never
deleted: it may be worth inspecting), and the run resumes from the newest checkpoint that
does restore. Unfinished saves (Orbax `*.orbax-checkpoint-tmp*` directories, e.g. a process
killed mid-save) are reported and then cleaned up by Orbax; they were never checkpoints.

Multi-process (Orbax 0.12.8 semantics): every process calls `save` and `restore` with the
same step; Orbax synchronises them with barriers, each process writes the array shards it
owns (replicated arrays once, from the process holding replica 0), and the primary host
(process 0) writes the JSON items and metadata and finalises the step directory. So the
checkpoint directory must be one shared location (the same path on every host).
"""

import dataclasses
import json
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

STATE_ITEM = "state"
DATA_ITEM = "data"
BEST_METRIC = "eval/nll"  # lower is better
CHECKPOINT_SUBDIR = "checkpoints"
QUARANTINE_SUBDIR = "checkpoints_corrupt"
_TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """No checkpoint in the directory could be restored."""


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
        if not read_only:
            self._report_unfinished_saves()
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
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=async_save,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE_ITEM, DATA_ITEM)
        )

    def _report_unfinished_saves(self):
        if not self.directory.exists():
            return
        unfinished = sorted(p.name for p in self.directory.iterdir() if _TMP_MARKER in p.name)
        if unfinished:
            logging.warning(
                "Unfinished checkpoint save(s) in %s (a process stopped while writing): %s. "
                "They are not checkpoints and will be removed; resuming from the newest "
                "finished checkpoint.",
                self.directory,
                ", ".join(unfinished),
            )

    def all_steps(self) -> list[int]:
        """Steps of the finished checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the lowest eval NLL among checkpoints that carry metrics, or None."""
        steps_with_metrics = [s for s in self.all_steps() if self._manager.metrics(s)]
        return self._manager.best_step() if steps_with_metrics else None

    def metrics(self, step: int) -> Mapping[str, float] | None:
        """The metrics saved with `step`, or None."""
        return self._manager.metrics(step)

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
        # force=True: our loop decides when to save; Orbax's own interval policy would
        # silently skip a step it does not like.
        return self._manager.save(step, args=args, metrics=metrics, force=True)

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

    def restore_latest(self, abstract_state: Any, *, which: str = "latest") -> Restored | None:
        """Restores the newest checkpoint that restores (or the best one), or None if none exist.

        Checkpoints newer than the one restored that fail to restore are reported and (unless
        read-only) moved to `quarantine_directory`, so that the resumed run can save those
        steps again.

        Args:
          abstract_state: see `restore`.
          which: 'latest' or 'best' (lowest eval NLL; falls back to latest if none has one).

        Returns:
          The restored checkpoint, or None when the directory holds no checkpoint.

        Raises:
          CheckpointError: checkpoints exist but none of them restores (nothing is moved).
          ValueError: `which` is not 'latest' or 'best'.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        candidates = sorted(self.all_steps(), reverse=True)
        if which == "best" and self.best_step() is not None:
            best = self.best_step()
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
        if failures:
            raise CheckpointError(
                f"None of the checkpoints in {self.directory} (steps "
                f"{[s for s, _ in failures]}) can be restored; the newest failed with: "
                f"{failures[0][1][:500]}. Nothing was moved or deleted. To start over, use a "
                "new --workdir (or move the checkpoints folder away)."
            )
        return None

    def _quarantine(self, steps: list[int]):
        """Moves unreadable step directories out of the manager's sight (never deletes)."""
        self.wait_until_finished()
        if jax.process_index() == 0:
            self.quarantine_directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                source = self.directory / str(step)
                if source.exists():
                    target = self.quarantine_directory / f"{step}-{stamp}"
                    source.rename(target)
                    logging.warning("Moved unreadable checkpoint %s to %s", source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("pixel_rnn_jax_checkpoint_quarantine")
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """True when JAX's multi-host preemption service asks all processes to save at `step`."""
        return self._manager.reached_preemption(step)

    def wait_until_finished(self):
        """Blocks until background saves are written (call before exiting)."""
        self._manager.wait_until_finished()

    def close(self):
        """Waits for saves and releases the manager's resources."""
        self._manager.wait_until_finished()
        self._manager.close()
