"""`train_and_evaluate(config, workdir)`: the training loop.

The loop resumes from the latest checkpoint (including the data position), evaluates on the
whole test split, writes metrics and images, stops on NaN before anything bad is saved, and
checkpoints on SIGTERM. The steps it runs are `steps.make_train_step` / `make_eval_step`;
the checks that can stop it early are in `guards`.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from pixel_rnn_jax import checkpoints, data, errors, metric_logging, models, parallel
from pixel_rnn_jax import workdir as workdir_checks
from pixel_rnn_jax.train import grids, guards
from pixel_rnn_jax.train.state import (
    TrainState,
    abstract_state,
    init_train_state,
    learning_rate_scale,
    make_optimizer,
)
from pixel_rnn_jax.train.steps import evaluate, make_eval_step, make_train_step


def _check_setup(config: ml_collections.ConfigDict, workdir: str):
    """Everything that can be wrong with the setup fails here, before compiling anything.

    Returns:
      (dataset spec, data mesh).
    """
    tc = config.train
    if tc.num_steps < 1 or tc.log_every < 1 or tc.checkpoint_every < 1:
        raise errors.ConfigError(
            "train.num_steps, train.log_every and train.checkpoint_every must be >= 1; got "
            f"{tc.num_steps}, {tc.log_every}, {tc.checkpoint_every}."
        )
    learning_rate_scale(tc)  # a decay that cannot run is refused before the workdir is made
    guards.check_workdir_is_local_path(workdir)
    workdir_checks.prepare_workdir(workdir, config)  # creates it; refuses read-only/other model
    spec = data.resolve_dataset(config.data)
    if spec.fallback_reason:
        logging.warning("%s\n%s\n%s", "!" * 80, spec.fallback_reason, "!" * 80)
    guards.check_model_matches_data(config, spec)
    mesh = parallel.make_mesh()
    for what in ("batch_size", "eval_batch_size"):
        data.check_global_batch(
            tc[what], mesh.devices.size, jax.process_count(), what=f"train.{what}"
        )
    guards.check_shared_workdir(workdir)
    return spec, mesh


def _write_run_info(workdir: str, config, spec: data.DatasetSpec, mesh):
    info = {
        "config": config.to_dict(),
        "fallback_reason": spec.fallback_reason,
        "dataset": {
            "requested_name": spec.requested_name,
            "name": spec.name,
            "image_shape": list(spec.image_shape),
            "num_levels": spec.num_levels,
            "num_train": spec.num_train,
            "num_test": spec.num_test,
            "data_dir": spec.data_dir,
        },
        "devices": {
            "platform": jax.devices()[0].platform,
            "device_count": jax.device_count(),
            "process_count": jax.process_count(),
            "mesh_shape": dict(mesh.shape),
        },
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(info, f, indent=2, default=str)


@dataclasses.dataclass
class _TrainLog:
    """Host-side accumulation of per-step metrics between log lines."""

    loss_sum: float = 0.0
    bpd_sum: float = 0.0
    count: int = 0
    last: dict = dataclasses.field(default_factory=dict)

    def add(self, metrics: Mapping[str, float]):
        self.loss_sum += metrics["loss"]
        self.bpd_sum += metrics["bits_per_dim"]
        self.count += 1
        self.last = dict(metrics)

    def reset(self):
        self.loss_sum, self.bpd_sum, self.count = 0.0, 0.0, 0


def _set_data_state(train_iter: data.TrainIterator, data_state: Any, ckpt_dir) -> None:
    try:
        train_iter.set_state(data_state)
    except ValueError as error:
        raise errors.ConfigError(
            f"The checkpoint in {ckpt_dir} was written with other data settings ({error}). "
            "Resume with the settings it was trained with, or start a new --workdir."
        ) from error


def _log_train_interval(step, train_config, log: _TrainLog, interval, writer):
    """Writes the train scalars of the last interval; returns them."""
    num_steps, batch_size = train_config.num_steps, train_config.batch_size
    elapsed, steps = interval.elapsed(), interval.steps
    steps_per_sec = steps / elapsed if steps and elapsed > 0 else float("nan")
    scalars = {
        "train/loss": log.loss_sum / max(log.count, 1),
        "train/bits_per_dim": log.bpd_sum / max(log.count, 1),
        "train/grad_norm": log.last["grad_norm"],
        "train/param_norm": log.last["param_norm"],
        # The rate of the interval's last update (`lr_scale` is there when it decays).
        "train/learning_rate": train_config.learning_rate * log.last.get("lr_scale", 1.0),
        "steps_per_sec": steps_per_sec,
        "images_per_sec": steps_per_sec * batch_size,
    }
    if "l2_penalty" in log.last:  # train.l2_weight > 0: the term added to the loss
        scalars["train/l2_penalty"] = log.last["l2_penalty"]
    writer.write_scalars(step, scalars)
    eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else math.nan
    logging.info(
        "step %d/%d | loss %.3f nats/image (%.4f bits/dim) | grad norm %.3g | param norm %.3g | "
        "learning rate %.3g | %.2f steps/s | %.1f images/s | ETA %s",
        step,
        num_steps,
        scalars["train/loss"],
        scalars["train/bits_per_dim"],
        scalars["train/grad_norm"],
        scalars["train/param_norm"],
        scalars["train/learning_rate"],
        steps_per_sec,
        scalars["images_per_sec"],
        metric_logging.format_duration(eta),
    )
    return scalars


def _restore_or_init(
    ckpt, abstract, init_fn, init_rng, sharding, train_iter, writer, start_fresh: bool
) -> TrainState:
    """The latest checkpoint's state (and data position), or a fresh state at step 0.

    `start_fresh` (`train.start_fresh`) allows a fresh start over checkpoints none of which
    restores (they are moved aside); without it that is a CheckpointError.
    """
    restored = ckpt.restore_latest(abstract, start_fresh=start_fresh)
    if restored is None:
        logging.info("No checkpoint in %s: starting from scratch.", ckpt.directory)
        return jax.jit(init_fn, out_shardings=sharding)(init_rng)
    if restored.data_state is not None:
        _set_data_state(train_iter, restored.data_state, ckpt.directory)
    writer.truncate_after(restored.step)
    logging.info("Resumed from the checkpoint at step %d in %s.", restored.step, ckpt.directory)
    return restored.state


@dataclasses.dataclass
class _Reporter:
    """Evaluation on the test split and the sample grids, at the steps the loop asks for."""

    config: ml_collections.ConfigDict
    spec: data.DatasetSpec
    mesh: Any
    model: Any
    writer: metric_logging.MetricWriter
    progress: metric_logging.ProgressBar
    sample_rng: jax.Array
    is_writer: bool

    def __post_init__(self):
        self.p_eval_step = make_eval_step(self.model, self.spec.num_levels, self.mesh)
        self.completion_source = self.completion_labels = None
        if self.is_writer and self.config.train.num_samples > 0:
            first = next(iter(self.eval_batches()))
            keep = first["mask"]
            self.completion_source = first["image"][keep][: self.config.train.num_samples]
            if "label" in first:  # class-conditional: complete each image given its label
                self.completion_labels = first["label"][keep][: self.config.train.num_samples]

    def eval_batches(self, split: str | None = None):
        return data.eval_batches(
            self.spec,
            self.config.data,
            global_batch_size=self.config.train.eval_batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            split=split or self.spec.selection_split,
            with_labels=bool(self.config.model.num_classes),
        )

    def evaluate(self, params, at_step: int, *, split=None, prefix="eval") -> dict[str, float]:
        """NLL over a whole split (or eval_max_batches of it), logged and written.

        Args:
          params: replicated parameters.
          at_step: the step the metrics are written at.
          split: default `spec.selection_split`: validation where the dataset has one, so
            that the best checkpoint is chosen without looking at the test split.
          prefix: the metrics' prefix ('eval' during training, 'test' for the final report).
        """
        split = split or self.spec.selection_split
        start = time.perf_counter()
        num_dims = math.prod(self.spec.image_shape)
        metrics = evaluate(
            self.p_eval_step,
            params,
            self.eval_batches(split),
            self.mesh,
            num_dims,
            self.config.train.eval_max_batches,
        )
        metrics = {k.replace("eval/", f"{prefix}/", 1): v for k, v in metrics.items()}
        metrics[f"{prefix}/seconds"] = time.perf_counter() - start
        self.writer.write_scalars(at_step, metrics)
        self.progress.clear()
        logging.info(
            "step %d | %s NLL%s %.3f nats/image (%.4f bits/dim) on %d %s images | %.1f s",
            at_step,
            prefix,
            " -log p(x | y)" if self.config.model.num_classes else "",
            metrics[f"{prefix}/nll"],
            metrics[f"{prefix}/bits_per_dim"],
            metrics[f"{prefix}/num_images"],
            split,
            metrics[f"{prefix}/seconds"],
        )
        return metrics

    def test_best(self, ckpt, abstract, at_step: int) -> dict[str, Any]:
        """The best checkpoint by validation NLL, evaluated once on the reported split.

        Only for datasets whose validation split is not the reported one (binarized MNIST):
        there the checkpoint is selected on validation and the number reported is that
        checkpoint's test NLL, never a test number chosen by looking at the test split.
        """
        ckpt.wait_until_finished()
        best = ckpt.restore_latest(abstract, which="best")
        metrics = self.evaluate(
            best.state.params, at_step, split=self.spec.eval_split, prefix="test"
        )
        return {**metrics, "test/checkpoint_step": best.step}

    def write_samples(self, params, at_step: int):
        """Sample and completion grids (process 0; after the step's checkpoint is saved)."""
        if not self.is_writer or self.config.train.num_samples <= 0:
            return
        start = time.perf_counter()
        # Host copies: sampling runs on this process's default device only, and the
        # donated state buffers must not be aliased.
        host_params = jax.tree.map(np.array, jax.device_get(params))
        try:
            images = grids.sample_images(
                self.model,
                host_params,
                jax.random.fold_in(self.sample_rng, at_step),
                spec=self.spec,
                train_config=self.config.train,
                completion_source=self.completion_source,
                completion_labels=self.completion_labels,
            )
        except Exception:  # noqa: BLE001 - pictures must not end a long run
            logging.exception("Sampling failed at step %d; training continues.", at_step)
            return
        for name, image in images.items():
            logging.info("Wrote %s", self.writer.write_image(at_step, name, image))
        logging.info("Sampling took %.1f s.", time.perf_counter() - start)


class _PendingMetrics:
    """The newest step's device metrics, fetched and NaN-checked one step late.

    Checking the previous step's metrics while the next one runs keeps dispatch
    asynchronous; `settle()` forces the check, and runs before every save and log line, so
    a state whose update produced NaN/inf is never saved.
    """

    def __init__(self, ckpt: checkpoints.CheckpointManager):
        self._ckpt = ckpt
        self._pending: tuple[int, Mapping[str, jax.Array]] | None = None
        self.log = _TrainLog()

    def push(self, step: int, device_metrics: Mapping[str, jax.Array]):
        self.settle()
        self._pending = (step, device_metrics)

    def settle(self):
        if self._pending is None:
            return
        at, device_metrics = self._pending
        self._pending = None
        host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        guards.check_finite(at, host, self._ckpt.latest_step(), self._ckpt.directory)
        self.log.add(host)


class _Interval:
    """Wall time and step count since the last log line, evaluation or sampling."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.start, self.steps = time.perf_counter(), 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _stop_request(cleanup: contextlib.ExitStack, ckpt) -> guards.StopRequest:
    """A SIGTERM handler (one process) whose `signum` the loop reads at step boundaries.

    Several processes: no Python handler. JAX's preemption service (started by
    jax.distributed.initialize) catches SIGTERM on any process and agrees on a step at which
    every process sees `reached_preemption`; no per-step host synchronisation.
    """
    stop = guards.StopRequest()
    if jax.process_count() == 1:
        cleanup.enter_context(guards.handle_signal(signal.SIGTERM, stop))
        # Runs first on exit, handler still installed: a 2nd SIGTERM cannot kill the save.
        cleanup.callback(ckpt.wait_until_finished)
    elif not guards.preemption_notice_is_shared():
        logging.warning(
            "JAX's preemption service is off (jax_enable_preemption_service): a SIGTERM "
            "ends this multi-process run without a checkpoint."
        )
    return stop


def _log_start(config, spec: data.DatasetSpec, mesh, abstract, step: int):
    logging.info(
        "Model %s: %d parameters; dataset %s %s; global batch %d over %d device(s) in %d "
        "process(es); steps %d -> %d.",
        config.model.name,
        sum(x.size for x in jax.tree.leaves(abstract.params)),
        spec.name,
        spec.image_shape,
        config.train.batch_size,
        mesh.devices.size,
        jax.process_count(),
        step,
        config.train.num_steps,
    )


@dataclasses.dataclass
class _Loop:
    """One training run's loop: its state and, as methods, the jobs of each step.

    `train_and_evaluate` reads as the list of those jobs: take a step, log, evaluate,
    checkpoint, draw samples, stop on preemption; each is a method here.
    """

    config: ml_collections.ConfigDict
    spec: data.DatasetSpec
    state: TrainState
    ckpt: checkpoints.CheckpointManager
    writer: metric_logging.MetricWriter
    progress: metric_logging.ProgressBar
    train_iter: data.TrainIterator
    reporter: _Reporter
    stop: guards.StopRequest
    train_step: Any  # `make_train_step(...)`: (state, batch, rng) -> (state, device metrics)
    train_rng: jax.Array  # replicated
    mesh: Any
    # Set here, not by the caller:
    step: int = dataclasses.field(init=False)  # the state's step, kept on the host
    start_step: int = dataclasses.field(init=False)  # the step this run started (resumed) at
    metrics: _PendingMetrics = dataclasses.field(init=False)
    interval: _Interval = dataclasses.field(init=False, default_factory=_Interval)
    last_eval: dict = dataclasses.field(init=False, default_factory=dict)
    last_eval_step: int = dataclasses.field(init=False, default=-1)
    last_scalars: dict = dataclasses.field(init=False, default_factory=dict)
    preempted: bool = dataclasses.field(init=False, default=False)

    def __post_init__(self):
        self.step = self.start_step = int(jax.device_get(self.state.step))
        self.metrics = _PendingMetrics(self.ckpt)

    @property
    def is_last(self) -> bool:
        return self.step == self.config.train.num_steps

    def take_step(self):
        """One update on the next batch; its metrics are checked one step late."""
        batch = parallel.shard_batch(next(self.train_iter), self.mesh)
        self.state, device_metrics = self.train_step(self.state, batch, self.train_rng)
        self.step += 1
        self.metrics.push(self.step, device_metrics)
        if self.step == self.start_step + 1:
            self.metrics.settle()
            logging.info("First step (including compilation) took %.1f s.", self.interval.elapsed())
            self.interval.reset()
        else:
            self.interval.steps += 1
        loss = self.metrics.log.last.get("loss", float("nan"))
        self.progress.update(self.step, f"loss {loss:.2f}")

    def log_if_due(self):
        """The train scalars of the interval, every `log_every` steps and at the end."""
        if self.step % self.config.train.log_every and not self.is_last:
            return
        self.metrics.settle()
        self.progress.clear()
        self.last_scalars = _log_train_interval(
            self.step, self.config.train, self.metrics.log, self.interval, self.writer
        )
        self.metrics.log.reset()
        self.interval.reset()

    def evaluate_if_due(self) -> dict[str, float] | None:
        """The selection split's NLL, every `eval_every` steps and at the end; else None."""
        every = self.config.train.eval_every
        if not ((every and self.step % every == 0) or self.is_last):
            return None
        self.metrics.settle()
        self.last_eval = self.reporter.evaluate(self.state.params, self.step)
        self.last_eval_step = self.step
        self.interval.reset()
        return self.last_eval

    def stop_requested(self) -> bool:
        """SIGTERM or a preemption notice. Every process must take the same branch (saving
        is collective): a local flag in a single process, the preemption service's common
        step otherwise."""
        return self.stop.signum is not None or self.ckpt.reached_preemption(self.step)

    def checkpoint_if_due(self, eval_metrics: dict | None, stopping: bool):
        """Saves every `checkpoint_every` steps, after an evaluation, at the end and on stop."""
        due = self.step % self.config.train.checkpoint_every == 0
        if not (due or eval_metrics or self.is_last or stopping):
            return
        self.metrics.settle()  # Never save a state whose update produced NaN/inf.
        best = {k: v for k, v in (eval_metrics or {}).items() if k.startswith("eval/")}
        if self.ckpt.save(self.step, self.state, self.train_iter.get_state(), metrics=best or None):
            logging.info("Saving checkpoint at step %d (%s).", self.step, self.ckpt.directory)

    def sample_if_due(self, eval_metrics: dict | None, stopping: bool):
        """Sample grids after each evaluation, unless stopping (a preempted run has seconds)."""
        if eval_metrics and not stopping:
            self.reporter.write_samples(self.state.params, self.step)
            self.interval.reset()

    def stop_on_request(self):
        self.preempted = True
        self.progress.clear()
        logging.warning(
            "Stopped at step %d on request (SIGTERM / preemption notice); checkpoint saved in "
            "%s. Rerun the same command to resume.",
            self.step,
            self.ckpt.directory,
        )

    def finish(self, abstract) -> dict[str, Any]:
        """The final numbers: an evaluation if the run resumed at its end, then (datasets
        with a separate validation split) the best checkpoint's test NLL."""
        self.metrics.settle()
        if self.step >= self.config.train.num_steps and self.last_eval_step != self.step:
            # Resumed at (or past) the end: report the final model's NLL anyway.
            self.last_eval = self.reporter.evaluate(self.state.params, self.step)
            self.reporter.write_samples(self.state.params, self.step)
        spec = self.spec
        selects_on_validation = spec.validation_split not in (None, spec.eval_split)
        if selects_on_validation and not self.preempted:
            test = self.reporter.test_best(self.ckpt, abstract, self.step)
            self.last_eval = {**self.last_eval, **test}
        scalars = self.last_scalars
        return {
            "step": self.step,
            "preempted": self.preempted,
            "images_per_sec": scalars.get("images_per_sec", float("nan")),
            "dataset": spec.name,
            "fallback_reason": spec.fallback_reason,
            # 'eval/*' are on `eval_split` ('validation' or the reported split); with a
            # separate validation split, 'test/*' are the best-by-validation checkpoint's on
            # the test split.
            "eval_split": spec.selection_split,
            "selected_by": "validation" if selects_on_validation else "last step",
            **self.last_eval,
            **{k: scalars[k] for k in ("train/loss", "train/bits_per_dim") if k in scalars},
        }


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, return_state: bool = False
) -> dict[str, Any] | tuple[dict[str, Any], TrainState]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final metrics.

    Every process of a multi-process run calls this with the same config and workdir (a
    path all of them see); process 0 alone writes metrics, images and config.json.

    Args:
      config: an experiment config (`experiments.configs.get_config(name)`).
      workdir: where checkpoints, metrics.jsonl, TensorBoard files, images and config.json go.
      return_state: also return the final TrainState (global, replicated arrays).

    Returns:
      {'step', 'preempted', 'train/loss' and 'train/bits_per_dim' (mean of the last log
      interval), 'images_per_sec', 'eval/nll', 'eval/bits_per_dim', 'eval/num_images' (on
      'eval_split': the validation split where the dataset has one, else the reported
      split), 'selected_by' ('validation' or 'last step'), 'dataset', 'fallback_reason'} at
      the last step reached, plus 'test/nll', 'test/bits_per_dim', 'test/num_images' and
      'test/checkpoint_step' (the best checkpoint by validation, on the test split) when the
      dataset has a separate validation split; with `return_state`, the pair (that dict,
      final state).

    Raises:
      TrainingDivergedError: NaN/inf loss or parameters (names the step).
      ValueError: inconsistent config (batch vs device count, model vs dataset), or a
        workdir that is a URL or (multi-process) not shared by every process.
      checkpoints.CheckpointError: checkpoints exist but none restores.
    """
    tc = config.train
    is_writer = jax.process_index() == 0
    spec, mesh = _check_setup(config, workdir)
    if is_writer:
        _write_run_info(workdir, config, spec, mesh)
    model = models.build_model(config.model)
    tx = make_optimizer(tc)
    init_fn = functools.partial(init_train_state, model=model, tx=tx, image_shape=spec.image_shape)
    init_rng, train_rng, sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    replicated = parallel.replicated_sharding(mesh)
    abstract = abstract_state(init_fn, init_rng, replicated)

    with contextlib.ExitStack() as cleanup:
        ckpt = checkpoints.CheckpointManager(workdir, keep_last=tc.keep_checkpoints)
        # Runs on errors too: in-flight saves of good states finish before the process ends.
        cleanup.callback(ckpt.close)
        writer = metric_logging.MetricWriter(workdir, enabled=is_writer)
        cleanup.callback(writer.close)
        progress = metric_logging.ProgressBar(tc.num_steps, enabled=is_writer)
        cleanup.callback(progress.close)
        train_iter = data.TrainIterator(
            spec,
            config.data,
            global_batch_size=tc.batch_size,
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            with_labels=bool(config.model.num_classes),  # class-conditional models
            perturb_rate=config.data.perturb_rate,  # background models only
        )
        state = _restore_or_init(
            ckpt, abstract, init_fn, init_rng, replicated, train_iter, writer, tc.start_fresh
        )
        _log_start(config, spec, mesh, abstract, int(jax.device_get(state.step)))
        loop = _Loop(
            config=config,
            spec=spec,
            state=state,
            ckpt=ckpt,
            writer=writer,
            progress=progress,
            train_iter=train_iter,
            reporter=_Reporter(config, spec, mesh, model, writer, progress, sample_rng, is_writer),
            stop=_stop_request(cleanup, ckpt),
            train_step=make_train_step(
                model,
                tx,
                spec.num_levels,
                mesh,
                lr_scale=learning_rate_scale(tc),
                l2_weight=tc.l2_weight,
            ),
            train_rng=parallel.replicate(train_rng, mesh),
            mesh=mesh,
        )
        while loop.step < tc.num_steps:
            loop.take_step()
            loop.log_if_due()
            eval_metrics = loop.evaluate_if_due()
            stopping = loop.stop_requested()
            loop.checkpoint_if_due(eval_metrics, stopping)
            loop.sample_if_due(eval_metrics, stopping)
            if stopping:
                loop.stop_on_request()
                break
        result = loop.finish(abstract)
    return (result, loop.state) if return_state else result
