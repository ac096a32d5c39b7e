"""`train_and_evaluate(config, workdir)`: the train and eval steps and the training loop.

The math lives in two pure per-device functions written in pmap's model (`train_step`,
`eval_step`); `parallel.data_parallel` runs them as `jax.jit(jax.shard_map(...))` over a
`data` mesh of every device of every process. The loop around them resumes from the latest
checkpoint (including the data position), evaluates on the whole test split, writes
metrics/images, stops on NaN before anything bad is saved, and checkpoints on SIGTERM.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from pixel_rnn_jax import checkpoints, data, errors, likelihood, metric_logging, models, parallel
from pixel_rnn_jax import workdir as workdir_checks
from pixel_rnn_jax.errors import TrainingDivergedError

DATA_AXIS = parallel.DATA_AXIS


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to continue training bit-exactly (besides data)."""

    step: jax.Array  # int32 scalar: optimiser updates applied so far
    params: Any  # the model's 'params' collection
    opt_state: Any  # optax state of `make_optimizer(config.train)`


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping followed by the configured optimiser (constant learning rate).

    Args:
      train_config: `config.train` (optimizer, learning_rate, rmsprop_decay, eps,
        grad_clip_norm).

    Returns:
      The optax transformation.
    """
    name = train_config.optimizer
    if name == "rmsprop":
        # eps outside the square root, no centring, no momentum: Torch's RMSProp, which the
        # paper used.
        optimizer = optax.rmsprop(
            train_config.learning_rate,
            decay=train_config.rmsprop_decay,
            eps=train_config.eps,
            eps_in_sqrt=False,
        )
    elif name == "adam":
        optimizer = optax.adam(train_config.learning_rate, eps=train_config.eps)
    else:
        raise errors.ConfigError(f"Unknown train.optimizer {name!r}; use 'rmsprop' or 'adam'.")
    if train_config.grad_clip_norm and train_config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), optimizer)
    return optimizer


def init_train_state(
    rng: jax.Array, *, model: Any, tx: optax.GradientTransformation, image_shape: tuple
) -> TrainState:
    """Initialises parameters and optimiser state (pure; jit it with replicated outputs).

    Args:
      rng: PRNG key.
      model: the Linen model from `models.build_model`.
      tx: the optimiser.
      image_shape: (height, width, channels).

    Returns:
      A TrainState at step 0.
    """
    images = jnp.zeros((1, *image_shape), jnp.int32)
    variables = model.init(rng, images)
    extra = set(variables) - {"params"}
    if extra:
        raise ValueError(f"Model has non-parameter collections {extra}; the runner expects none.")
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _nll_per_image(params, images, *, model, num_levels, rngs=None) -> jax.Array:
    """-log p(image) in nats, `[batch]`, for integer images `[batch, H, W, C]`."""
    logits = model.apply({"params": params}, images, rngs=rngs)
    return -likelihood.log_likelihood(logits, images, num_levels)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    model: Any,
    tx: optax.GradientTransformation,
    num_levels: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser update on this device's slice of the global batch (per-device view).

    Must run under `shard_map` (or pmap) with axis `DATA_AXIS`: gradients and metrics are
    averaged over it, so every device applies the global-batch gradient. Each device holds
    the same number of examples, so the mean of per-device means is the global mean.

    Args:
      state: replicated train state.
      batch: {'image': integer [local_batch, height, width, channels]}.
      rng: replicated base PRNG key; folded with the step (and device) for this update.
      model: the Linen model.
      tx: the optimiser.
      num_levels: 2 or 256.

    Returns:
      (new state, metrics) with metrics identical on all devices: 'loss' (mean NLL in nats
      per image), 'bits_per_dim', 'grad_norm' (before clipping), 'param_norm' (after the
      update), 'params_finite' (after the update).
    """
    images = batch["image"].astype(jnp.int32)
    # A per-step, per-device key for stochastic layers (e.g. dropout); today's models draw
    # no random numbers, so results do not depend on the device count.
    step_rng = jax.random.fold_in(
        jax.random.fold_in(rng, state.step), jax.lax.axis_index(DATA_AXIS)
    )

    def loss_fn(params):
        nll = _nll_per_image(
            params, images, model=model, num_levels=num_levels, rngs={"dropout": step_rng}
        )
        return jnp.mean(nll)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    # check_vma=False in parallel.data_parallel: these gradients are per-device, so pmean
    # gives the gradient of the global-batch mean loss.
    grads = jax.lax.pmean(grads, DATA_AXIS)
    loss = jax.lax.pmean(loss, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    num_dims = math.prod(images.shape[1:])
    metrics = {
        "loss": loss,
        "bits_per_dim": likelihood.nll_bits_per_dim(loss, num_dims),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "params_finite": _all_finite(params),
    }
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(
    params: Any, batch: Mapping[str, jax.Array], *, model: Any, num_levels: int
) -> dict[str, jax.Array]:
    """Summed NLL of the real (unmasked) images of the global batch (per-device view).

    Args:
      params: replicated parameters.
      batch: {'image': integer [local_batch, H, W, C], 'mask': bool [local_batch]}; padded
        examples have mask False.
      model: the Linen model.
      num_levels: 2 or 256.

    Returns:
      {'nll_sum': nats summed over real images, 'count': number of real images}, summed over
      all devices.
    """
    images = batch["image"].astype(jnp.int32)
    mask = batch["mask"].astype(jnp.float32)
    nll = _nll_per_image(params, images, model=model, num_levels=num_levels)
    # where, not multiply: a padded all-zero image could in principle have infinite NLL.
    nll_sum = jnp.sum(jnp.where(mask > 0, nll, 0.0))
    return {
        "nll_sum": jax.lax.psum(nll_sum, DATA_AXIS),
        "count": jax.lax.psum(jnp.sum(mask), DATA_AXIS),
    }


def make_train_step(model, tx, num_levels: int, mesh) -> Callable:
    """`(state, global batch, rng) -> (state, metrics)`, data-parallel, state donated."""
    return parallel.data_parallel(
        functools.partial(train_step, model=model, tx=tx, num_levels=num_levels),
        mesh,
        in_specs=(P(), P(DATA_AXIS), P()),
        out_specs=(P(), P()),
        donate_argnums=(0,),
    )


def make_eval_step(model, num_levels: int, mesh) -> Callable:
    """`(params, global batch) -> {'nll_sum', 'count'}`, data-parallel."""
    return parallel.data_parallel(
        functools.partial(eval_step, model=model, num_levels=num_levels),
        mesh,
        in_specs=(P(), P(DATA_AXIS)),
        out_specs=P(),
    )


def evaluate(
    p_eval_step: Callable,
    params: Any,
    batches: Iterator[Mapping[str, np.ndarray]],
    mesh,
    num_dims: int,
    max_batches: int = 0,
) -> dict[str, float]:
    """Mean test NLL over every (real) image of `batches`.

    Args:
      p_eval_step: from `make_eval_step`.
      params: replicated parameters.
      batches: this process's padded, masked eval batches (`data.eval_batches`).
      mesh: the data mesh.
      num_dims: sub-pixels per image (H * W * C).
      max_batches: stop after this many batches; 0 means all.

    Returns:
      {'eval/nll': nats per image, 'eval/bits_per_dim', 'eval/num_images'}.
    """
    nll_sum, count = 0.0, 0.0
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            break
        out = jax.device_get(p_eval_step(params, parallel.shard_batch(batch, mesh)))
        nll_sum += float(out["nll_sum"])  # float64 on the host: thousands of ~100-nat terms
        count += float(out["count"])
    if count == 0:
        raise ValueError("The evaluation split yielded no images.")
    nll = nll_sum / count
    return {
        "eval/nll": nll,
        "eval/bits_per_dim": float(likelihood.nll_bits_per_dim(nll, num_dims)),
        "eval/num_images": int(count),
    }


class _StopRequest:
    """Set by the SIGTERM handler; read by the loop at step boundaries."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        del frame
        self.signum = signum
        logging.warning(
            "Received signal %d: will save a checkpoint after the current step and exit.", signum
        )


@contextlib.contextmanager
def _handle_signal(signum: int, handler: Callable):
    """Installs `handler` for `signum` in the main thread, restoring the old one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        logging.warning("Not in the main thread: signal %d will not trigger a checkpoint.", signum)
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _check_model_matches_data(config: ml_collections.ConfigDict, spec: data.DatasetSpec):
    height, width, channels = spec.image_shape
    if config.model.num_channels != channels or config.model.num_levels != spec.num_levels:
        raise errors.ConfigError(
            f"Model expects {config.model.num_channels} channel(s) with "
            f"{config.model.num_levels} levels but dataset {spec.name!r} has {channels} "
            f"channel(s) with {spec.num_levels} levels. Set --config.model.num_channels="
            f"{channels} --config.model.num_levels={spec.num_levels}, or pick another dataset."
        )


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


def _check_finite(step: int, metrics: Mapping[str, float], last_good: int | None, ckpt_dir):
    """Raises TrainingDivergedError naming the step if the update produced NaN/inf."""
    bad = []
    if not math.isfinite(metrics["loss"]):
        bad.append(f"loss={metrics['loss']}")
    if not math.isfinite(metrics["grad_norm"]):
        bad.append(f"grad_norm={metrics['grad_norm']}")
    if not metrics["params_finite"]:
        bad.append("parameters contain NaN/inf after the update")
    if bad:
        where = (
            f"The last good checkpoint (step {last_good}) in {ckpt_dir} was not overwritten; "
            "rerunning resumes from it."
            if last_good is not None
            else "No checkpoint had been saved."
        )
        raise TrainingDivergedError(
            f"Training diverged at step {step}: {', '.join(bad)}. Nothing from step {step} was "
            f"saved. {where} Try a lower --config.train.learning_rate or "
            "--config.train.grad_clip_norm."
        )


def _sample_images(
    model,
    host_params,
    rng,
    *,
    spec,
    train_config,
    completion_source: np.ndarray | None,
    return_arrays: bool = False,
) -> dict[str, np.ndarray]:
    """Draws the sample grid and the completion panels (host params; process 0 only).

    Returns:
      {'samples': uint8 grid, 'completions': uint8 grid (if `completion_source`)}, plus the
      raw integer images `[n, H, W, C]` as 'samples_array' / 'completions_array' when
      `return_arrays`.
    """
    from pixel_rnn_jax import sampling  # noqa: PLC0415 - only needed when images are written

    height, width, channels = spec.image_shape
    num = train_config.num_samples
    variables = {"params": host_params}
    sample_rng, completion_rng = jax.random.split(rng)
    kwargs = {"method": train_config.sample_method, "temperature": train_config.sample_temperature}
    template = jnp.zeros((num, height, width, channels), jnp.int32)
    samples = np.asarray(sampling.sample(model, variables, sample_rng, template, start=0, **kwargs))
    out = {"samples": metric_logging.make_grid(metric_logging.to_uint8(samples, spec.num_levels))}
    if return_arrays:
        out["samples_array"] = samples
    if completion_source is not None and len(completion_source):
        originals = np.asarray(completion_source[:num], np.int32)
        given_rows = height // 2
        completed = np.asarray(
            sampling.sample(
                model,
                variables,
                completion_rng,
                jnp.asarray(originals),
                start=given_rows * width * channels,
                **kwargs,
            )
        )
        panels = metric_logging.completion_panels(
            metric_logging.to_uint8(originals, spec.num_levels),
            metric_logging.to_uint8(completed, spec.num_levels),
            given_rows,
        )
        out["completions"] = metric_logging.make_grid(
            panels,
            num_columns=max(1, round(math.sqrt(num / 3))),  # panels are 3 images wide
        )
        if return_arrays:
            out["completions_array"] = completed
    return out


def _abstract_state(init_fn: Callable, rng: jax.Array, sharding) -> Any:
    """Shapes, dtypes and shardings of the train state, without allocating it."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(init_fn, rng),
    )


def _set_data_state(train_iter: data.TrainIterator, data_state: Any, ckpt_dir) -> None:
    try:
        train_iter.set_state(data_state)
    except ValueError as error:
        raise errors.ConfigError(
            f"The checkpoint in {ckpt_dir} was written with other data settings ({error}). "
            "Resume with the settings it was trained with, or start a new --workdir."
        ) from error


def _log_train_interval(step, num_steps, log: _TrainLog, elapsed, steps, batch_size, writer):
    """Writes the train scalars of the last interval; returns them."""
    steps_per_sec = steps / elapsed if steps and elapsed > 0 else float("nan")
    scalars = {
        "train/loss": log.loss_sum / max(log.count, 1),
        "train/bits_per_dim": log.bpd_sum / max(log.count, 1),
        "train/grad_norm": log.last["grad_norm"],
        "train/param_norm": log.last["param_norm"],
        "steps_per_sec": steps_per_sec,
        "images_per_sec": steps_per_sec * batch_size,
    }
    writer.write_scalars(step, scalars)
    eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else math.nan
    logging.info(
        "step %d/%d | loss %.3f nats/image (%.4f bits/dim) | grad norm %.3g | param norm %.3g | "
        "%.2f steps/s | %.1f images/s | ETA %s",
        step,
        num_steps,
        scalars["train/loss"],
        scalars["train/bits_per_dim"],
        scalars["train/grad_norm"],
        scalars["train/param_norm"],
        steps_per_sec,
        scalars["images_per_sec"],
        metric_logging.format_duration(eta),
    )
    return scalars


def _check_workdir_is_local_path(workdir: str):
    if "://" in str(workdir):
        raise errors.WorkdirError(
            f"--workdir={workdir}: the runner writes metrics.jsonl, TensorBoard files and "
            "images with local file APIs, so the workdir must be a filesystem path. For a "
            "multi-host run use a path that every host sees, e.g. a Cloud Storage bucket "
            "mounted with Cloud Storage FUSE at the same mount point on every host "
            "(gcsfuse --implicit-dirs BUCKET /mnt/BUCKET; --workdir=/mnt/BUCKET/run), or an "
            "NFS/Filestore share."
        )


_SHARED_CHECK_FILE = ".pixel_rnn_shared_workdir_check"


def _check_shared_workdir(workdir: str):
    """Fails on every process unless all processes see the same `workdir` (multi-process).

    Orbax writes each array once (from the process that owns it) and the metadata from
    process 0, and every process reads the whole checkpoint back, so a workdir on each host's
    local disk would save "successfully" and then fail to resume. Process 0 writes a random
    token; every process must read it back.
    """
    if jax.process_count() == 1:
        return
    token = np.frombuffer(os.urandom(16), np.uint32)
    token = "".join(f"{int(w):08x}" for w in multihost_utils.broadcast_one_to_all(token))
    path = os.path.join(workdir, _SHARED_CHECK_FILE)
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            f.write(token)
        os.replace(path + ".tmp", path)
    multihost_utils.sync_global_devices("pixel_rnn_jax_shared_workdir_written")
    try:
        with open(path) as f:
            sees_it = f.read() == token
    except OSError:
        sees_it = False
    seen = np.ravel(multihost_utils.process_allgather(np.int32(sees_it)))
    if jax.process_index() == 0:
        os.remove(path)
    blind = [index for index, ok in enumerate(seen) if not ok]
    if blind:
        raise errors.WorkdirError(
            f"--workdir={workdir} is not shared: process(es) {blind} of {jax.process_count()} "
            "cannot see the file process 0 wrote there. Checkpoints of a multi-process run "
            "must live in one place that every host reads and writes at the same path (NFS, "
            "Filestore, or a Cloud Storage FUSE mount)."
        )


def _preemption_notice_is_shared() -> bool:
    """Whether JAX's preemption service turns a SIGTERM on any process into a common step."""
    return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


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
      interval), 'images_per_sec', 'eval/nll', 'eval/bits_per_dim', 'eval/num_images',
      'dataset', 'fallback_reason'} at the last step reached; with `return_state`, the pair
      (that dict, final state).

    Raises:
      TrainingDivergedError: NaN/inf loss or parameters (names the step).
      ValueError: inconsistent config (batch vs device count, model vs dataset), or a
        workdir that is a URL or (multi-process) not shared by every process.
      checkpoints.CheckpointError: checkpoints exist but none restores.
    """
    is_writer = jax.process_index() == 0
    _check_workdir_is_local_path(workdir)
    workdir_checks.prepare_workdir(workdir, config)  # creates it; refuses read-only/other model
    tc = config.train

    # --- Everything that can be wrong with the setup fails here, before compiling anything.
    spec = data.resolve_dataset(config.data)
    if spec.fallback_reason:
        logging.warning("%s\n%s\n%s", "!" * 80, spec.fallback_reason, "!" * 80)
    _check_model_matches_data(config, spec)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(tc.batch_size, mesh, "train.batch_size")
    parallel.check_global_batch(tc.eval_batch_size, mesh, "train.eval_batch_size")
    if tc.num_steps < 1 or tc.log_every < 1 or tc.checkpoint_every < 1:
        raise errors.ConfigError(
            "train.num_steps, train.log_every and train.checkpoint_every must be >= 1; got "
            f"{tc.num_steps}, {tc.log_every}, {tc.checkpoint_every}."
        )
    _check_shared_workdir(workdir)
    if is_writer:
        _write_run_info(workdir, config, spec, mesh)
    model = models.build_model(config.model)
    tx = make_optimizer(tc)
    num_dims = math.prod(spec.image_shape)
    init_fn = functools.partial(init_train_state, model=model, tx=tx, image_shape=spec.image_shape)
    replicated = parallel.replicated_sharding(mesh)
    init_rng, train_rng, sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    abstract_state = _abstract_state(init_fn, init_rng, replicated)

    def eval_batches():
        return data.eval_batches(
            spec,
            config.data,
            global_batch_size=tc.eval_batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    with contextlib.ExitStack() as cleanup:
        # --- State: restore (params, optimiser, data position) or initialise.
        ckpt = checkpoints.CheckpointManager(workdir, keep_last=tc.keep_checkpoints)
        # Runs on errors too: in-flight saves of good states finish before the process ends.
        cleanup.callback(ckpt.close)
        writer = metric_logging.MetricWriter(workdir, enabled=is_writer)
        cleanup.callback(writer.close)
        progress = metric_logging.ProgressBar(tc.num_steps, enabled=is_writer)
        cleanup.callback(progress.clear)
        train_iter = data.TrainIterator(
            spec,
            config.data,
            global_batch_size=tc.batch_size,
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        restored = ckpt.restore_latest(abstract_state, start_fresh=tc.get("start_fresh", False))
        if restored is not None:
            state = restored.state
            if restored.data_state is not None:
                _set_data_state(train_iter, restored.data_state, ckpt.directory)
            writer.truncate_after(restored.step)
            logging.info(
                "Resumed from the checkpoint at step %d in %s.", restored.step, ckpt.directory
            )
        else:
            state = jax.jit(init_fn, out_shardings=replicated)(init_rng)
            logging.info("No checkpoint in %s: starting from scratch.", ckpt.directory)
        step = int(jax.device_get(state.step))
        logging.info(
            "Model %s: %d parameters; dataset %s %s; global batch %d over %d device(s) in %d "
            "process(es); steps %d -> %d.",
            config.model.name,
            sum(x.size for x in jax.tree.leaves(abstract_state.params)),
            spec.name,
            spec.image_shape,
            tc.batch_size,
            mesh.devices.size,
            jax.process_count(),
            step,
            tc.num_steps,
        )

        p_train_step = make_train_step(model, tx, spec.num_levels, mesh)
        p_eval_step = make_eval_step(model, spec.num_levels, mesh)
        train_rng = parallel.replicate(train_rng, mesh)
        completion_source = None
        if is_writer and tc.num_samples > 0:
            first = next(iter(eval_batches()))
            completion_source = first["image"][first["mask"]][: tc.num_samples]

        def run_eval(at_step: int) -> dict[str, float]:
            """NLL over the whole test split (or eval_max_batches of it), logged and written."""
            start = time.perf_counter()
            metrics = evaluate(
                p_eval_step, state.params, eval_batches(), mesh, num_dims, tc.eval_max_batches
            )
            metrics["eval/seconds"] = time.perf_counter() - start
            writer.write_scalars(at_step, metrics)
            progress.clear()
            logging.info(
                "step %d | eval NLL %.3f nats/image (%.4f bits/dim) on %d test images | %.1f s",
                at_step,
                metrics["eval/nll"],
                metrics["eval/bits_per_dim"],
                metrics["eval/num_images"],
                metrics["eval/seconds"],
            )
            return metrics

        def write_samples(at_step: int):
            """Sample and completion grids (process 0; after the step's checkpoint is saved)."""
            if not is_writer or tc.num_samples <= 0:
                return
            start = time.perf_counter()
            # Host copies: sampling runs on this process's default device only, and the
            # donated state buffers must not be aliased.
            host_params = jax.tree.map(np.array, jax.device_get(state.params))
            try:
                images = _sample_images(
                    model,
                    host_params,
                    jax.random.fold_in(sample_rng, at_step),
                    spec=spec,
                    train_config=tc,
                    completion_source=completion_source,
                )
            except Exception:  # noqa: BLE001 - pictures must not end a long run
                logging.exception("Sampling failed at step %d; training continues.", at_step)
                return
            for name, image in images.items():
                logging.info("Wrote %s", writer.write_image(at_step, name, image))
            logging.info("Sampling took %.1f s.", time.perf_counter() - start)

        log = _TrainLog()
        pending: tuple[int, dict] | None = None  # the newest step's device metrics, unchecked
        last_eval: dict[str, float] = {}
        last_eval_step = -1
        last_scalars: dict[str, float] = {}
        interval_start, interval_steps = time.perf_counter(), 0
        run_start_step = step

        def settle():
            """Fetches and checks the pending step's metrics (the NaN check before a save)."""
            nonlocal pending
            if pending is None:
                return
            at, device_metrics = pending
            pending = None
            host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
            _check_finite(at, host, ckpt.latest_step(), ckpt.directory)
            log.add(host)

        stop = _StopRequest()
        preempted = False
        if jax.process_count() == 1:
            cleanup.enter_context(_handle_signal(signal.SIGTERM, stop))
            # Runs first on exit, handler still installed: a 2nd SIGTERM cannot kill the save.
            cleanup.callback(ckpt.wait_until_finished)
        elif not _preemption_notice_is_shared():
            logging.warning(
                "JAX's preemption service is off (jax_enable_preemption_service): a SIGTERM "
                "ends this multi-process run without a checkpoint."
            )
        # Several processes: no Python handler. JAX's preemption service (started by
        # jax.distributed.initialize) catches SIGTERM on any process and agrees on a step at
        # which every process sees `reached_preemption`; no per-step host synchronisation.
        while step < tc.num_steps:
            batch = parallel.shard_batch(next(train_iter), mesh)
            state, device_metrics = p_train_step(state, batch, train_rng)
            step += 1
            # Check the previous step's metrics while this one runs (keeps dispatch async).
            settle()
            pending = (step, device_metrics)
            if step == run_start_step + 1:
                settle()
                logging.info(
                    "First step (including compilation) took %.1f s.",
                    time.perf_counter() - interval_start,
                )
                interval_start, interval_steps = time.perf_counter(), 0
            else:
                interval_steps += 1
            progress.update(step, f"loss {log.last.get('loss', float('nan')):.2f}")

            is_last = step == tc.num_steps
            if step % tc.log_every == 0 or is_last:
                settle()
                progress.clear()
                last_scalars = _log_train_interval(
                    step,
                    tc.num_steps,
                    log,
                    time.perf_counter() - interval_start,
                    interval_steps,
                    tc.batch_size,
                    writer,
                )
                log.reset()
                interval_start, interval_steps = time.perf_counter(), 0

            eval_metrics = None
            if (tc.eval_every and step % tc.eval_every == 0) or is_last:
                settle()
                eval_metrics = last_eval = run_eval(step)
                last_eval_step = step
                interval_start, interval_steps = time.perf_counter(), 0

            # Every process must take the same branch (saving is collective): a local flag in
            # a single process, the preemption service's common step otherwise.
            stopping = stop.signum is not None or ckpt.reached_preemption(step)
            if step % tc.checkpoint_every == 0 or eval_metrics or is_last or stopping:
                settle()  # Never save a state whose update produced NaN/inf.
                best_metrics = None
                if eval_metrics:
                    best_metrics = {k: v for k, v in eval_metrics.items() if k.startswith("eval/")}
                if ckpt.save(step, state, train_iter.get_state(), metrics=best_metrics):
                    logging.info("Saving checkpoint at step %d (%s).", step, ckpt.directory)
            if eval_metrics and not stopping:  # a preempted run has seconds to exit
                write_samples(step)
                interval_start, interval_steps = time.perf_counter(), 0
            if stopping:
                preempted = True
                progress.clear()
                logging.warning(
                    "Stopped at step %d on request (SIGTERM / preemption notice); checkpoint "
                    "saved in %s. Rerun the same command to resume.",
                    step,
                    ckpt.directory,
                )
                break
        settle()
        if step >= tc.num_steps and last_eval_step != step:
            # Resumed at (or past) the end: report the final model's test NLL anyway.
            last_eval = run_eval(step)
            write_samples(step)

    result = {
        "step": step,
        "preempted": preempted,
        "images_per_sec": last_scalars.get("images_per_sec", float("nan")),
        "dataset": spec.name,
        "fallback_reason": spec.fallback_reason,
        **last_eval,
    }
    for key in ("train/loss", "train/bits_per_dim"):
        if key in last_scalars:
            result[key] = last_scalars[key]
    return (result, state) if return_state else result


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A trained model restored for evaluation or sampling."""

    model: Any  # the Linen model
    params: Any  # replicated parameters
    step: int  # the checkpoint's step
    spec: data.DatasetSpec  # the dataset the config resolves to
    mesh: Any  # the data mesh the parameters live on


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str = "latest"):
    """Restores a run's latest or best checkpoint read-only (safe next to a live run).

    Args:
      config: the run's config.
      workdir: the run's work directory.
      which: 'latest' or 'best' (lowest eval NLL).

    Returns:
      A LoadedCheckpoint.

    Raises:
      FileNotFoundError: the workdir has no checkpoint.
    """
    workdir_checks.check_config_matches(workdir, config)
    spec = data.resolve_dataset(config.data)
    _check_model_matches_data(config, spec)
    mesh = parallel.make_mesh()
    model = models.build_model(config.model)
    tx = make_optimizer(config.train)
    init_fn = functools.partial(init_train_state, model=model, tx=tx, image_shape=spec.image_shape)
    abstract_state = _abstract_state(
        init_fn, jax.random.PRNGKey(0), parallel.replicated_sharding(mesh)
    )
    ckpt = checkpoints.CheckpointManager(
        workdir, keep_last=max(1, config.train.keep_checkpoints), read_only=True
    )
    try:
        restored = ckpt.restore_latest(abstract_state, which=which)
    finally:
        ckpt.close()
    if restored is None:
        raise errors.NoCheckpointError(
            f"No checkpoint in {ckpt.directory}. Train first: python -m experiments.train "
            f"--config=... --workdir={workdir}"
        )
    return LoadedCheckpoint(
        model=model, params=restored.state.params, step=restored.step, spec=spec, mesh=mesh
    )


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, which: str = "latest"
) -> dict[str, Any]:
    """Test NLL (nats/image and bits/dim) of a run's latest or best checkpoint.

    Returns:
      {'step', 'eval/nll', 'eval/bits_per_dim', 'eval/num_images'} over the whole test split.
    """
    loaded = load_checkpoint(config, workdir, which)
    p_eval_step = make_eval_step(loaded.model, loaded.spec.num_levels, loaded.mesh)
    parallel.check_global_batch(config.train.eval_batch_size, loaded.mesh, "train.eval_batch_size")
    batches = data.eval_batches(
        loaded.spec,
        config.data,
        global_batch_size=config.train.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    metrics = evaluate(
        p_eval_step, loaded.params, batches, loaded.mesh, math.prod(loaded.spec.image_shape)
    )
    return {"step": loaded.step, **metrics}


def sample_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    out_dir: str,
    *,
    num: int = 64,
    complete: bool = False,
    which: str = "latest",
    seed: int = 0,
) -> dict[str, str]:
    """Writes a PNG grid and an .npz of samples (and of completions) from a checkpoint.

    Args:
      config: the run's config (train.sample_method / sample_temperature are used).
      workdir: the run's work directory.
      out_dir: where the files go.
      num: how many samples (and completions).
      complete: also complete the first `num` test images from their top half.
      which: 'latest' or 'best'.
      seed: sampling seed.

    Returns:
      {'samples_png', 'samples_npz', ...} paths written ('completions_*' with `complete`).
    """
    loaded = load_checkpoint(config, workdir, which)
    os.makedirs(out_dir, exist_ok=True)
    source = None
    if complete:
        images = []
        for batch in data.eval_batches(loaded.spec, config.data, global_batch_size=num):
            images.append(batch["image"][batch["mask"]])
            if sum(len(x) for x in images) >= num:
                break
        source = np.concatenate(images)[:num]
    train_config = ml_collections.ConfigDict(config.train.to_dict())
    train_config.num_samples = num
    host_params = jax.tree.map(np.array, jax.device_get(loaded.params))
    drawn = _sample_images(
        loaded.model,
        host_params,
        jax.random.PRNGKey(seed),
        spec=loaded.spec,
        train_config=train_config,
        completion_source=source,
        return_arrays=True,
    )
    paths = {}
    for name in ("samples", "completions"):
        if name not in drawn:
            continue
        stem = os.path.join(out_dir, f"{name}_step{loaded.step}")
        metric_logging.save_png(stem + ".png", drawn[name])
        np.savez_compressed(stem + ".npz", images=drawn[name + "_array"])
        paths[name + "_png"], paths[name + "_npz"] = stem + ".png", stem + ".npz"
    return paths
