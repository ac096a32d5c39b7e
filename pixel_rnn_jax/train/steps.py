"""The pure per-device train and eval steps, their `shard_map` wrappers, and evaluation.

The math lives in two pure per-device functions written in pmap's model (`train_step`,
`eval_step`); `parallel.data_parallel` runs them as `jax.jit(jax.shard_map(...))` over a
`data` mesh of every device of every process. The benchmarks time `make_train_step`'s
program, the one the runner trains with.
"""

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from pixel_rnn_jax import likelihood, parallel
from pixel_rnn_jax.train.state import TrainState

DATA_AXIS = parallel.DATA_AXIS


def nll_per_image(params, images, *, model, num_levels, rngs=None, labels=None) -> jax.Array:
    """-log p(image) in nats, `[batch]`, for integer images `[batch, H, W, C]`.

    With `labels` (integer `[batch]`, class-conditional models) it is -log p(image | label).
    """
    logits = model.apply({"params": params}, images, labels, rngs=rngs)
    return -likelihood.log_likelihood(logits, images, num_levels)


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    model: Any,
    tx: optax.GradientTransformation,
    num_levels: int,
    lr_scale: optax.Schedule | None = None,
    l2_weight: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser update on this device's slice of the global batch (per-device view).

    Must run under `shard_map` (or pmap) with axis `DATA_AXIS`: gradients and metrics are
    averaged over it, so every device applies the global-batch gradient. Each device holds
    the same number of examples, so the mean of per-device means is the global mean.

    Args:
      state: replicated train state.
      batch: {'image': integer [local_batch, height, width, channels]}, plus 'label':
        integer [local_batch] for a class-conditional model (the loss is then
        -log p(x | y)).
      rng: replicated base PRNG key; folded with the step (and device) for this update.
      model: the Linen model.
      tx: the optimiser.
      num_levels: 2 or 256.
      lr_scale: `state.learning_rate_scale(config.train)`: multiplies the updates, given
        the step before this update; None keeps them as `tx` gives them.
      l2_weight: adds `l2_weight * sum(params ** 2)` to the loss that is differentiated
        (`config.train.l2_weight`); 0 leaves the program without it.

    Returns:
      (new state, metrics) with metrics identical on all devices: 'loss' (mean NLL in nats
      per image), 'bits_per_dim', 'grad_norm' (before clipping), 'param_norm' (after the
      update), 'params_finite' (after the update), with `lr_scale` 'lr_scale' (the
      multiplier this update used), and with `l2_weight` 'l2_penalty' (the term added to
      'loss' before differentiating, at the parameters before the update).
    """
    images = batch["image"].astype(jnp.int32)
    labels = batch.get("label")
    # A per-step, per-device key for stochastic layers (e.g. dropout); today's models draw
    # no random numbers, so results do not depend on the device count.
    step_rng = jax.random.fold_in(
        jax.random.fold_in(rng, state.step), jax.lax.axis_index(DATA_AXIS)
    )

    def loss_fn(params):
        nll = nll_per_image(
            params,
            images,
            model=model,
            num_levels=num_levels,
            rngs={"dropout": step_rng},
            labels=labels,
        )
        return jnp.mean(nll)

    penalty_metrics = {}
    if l2_weight:
        # A Python branch: without a penalty the program is exactly the unpenalised one.
        def penalised_loss(params):
            penalty = l2_weight * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))
            loss = loss_fn(params)
            return loss + penalty, (loss, penalty)

        (_, (loss, penalty)), grads = jax.value_and_grad(penalised_loss, has_aux=True)(state.params)
        penalty_metrics["l2_penalty"] = jax.lax.pmean(penalty, DATA_AXIS)
    else:
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
    # check_vma=False in parallel.data_parallel: these gradients are per-device, so pmean
    # gives the gradient of the global-batch mean loss.
    grads = jax.lax.pmean(grads, DATA_AXIS)
    loss = jax.lax.pmean(loss, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if lr_scale is not None:
        scale = lr_scale(state.step)
        updates = jax.tree.map(lambda update: update * scale.astype(update.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    num_dims = math.prod(images.shape[1:])
    metrics = {
        "loss": loss,
        "bits_per_dim": likelihood.nll_bits_per_dim(loss, num_dims),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "params_finite": all_finite(params),
    }
    if lr_scale is not None:
        metrics["lr_scale"] = scale
    metrics.update(penalty_metrics)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(
    params: Any, batch: Mapping[str, jax.Array], *, model: Any, num_levels: int
) -> dict[str, jax.Array]:
    """Summed NLL of the real (unmasked) images of the global batch (per-device view).

    Args:
      params: replicated parameters.
      batch: {'image': integer [local_batch, H, W, C], 'mask': bool [local_batch]}, plus
        'label' [local_batch] for a class-conditional model (then the NLL is
        -log p(x | y)); padded examples have mask False.
      model: the Linen model.
      num_levels: 2 or 256.

    Returns:
      {'nll_sum': nats summed over real images, 'count': number of real images}, summed over
      all devices.
    """
    images = batch["image"].astype(jnp.int32)
    mask = batch["mask"].astype(jnp.float32)
    nll = nll_per_image(
        params, images, model=model, num_levels=num_levels, labels=batch.get("label")
    )
    # where, not multiply: a padded all-zero image could in principle have infinite NLL.
    nll_sum = jnp.sum(jnp.where(mask > 0, nll, 0.0))
    return {
        "nll_sum": jax.lax.psum(nll_sum, DATA_AXIS),
        "count": jax.lax.psum(jnp.sum(mask), DATA_AXIS),
    }


def make_train_step(
    model, tx, num_levels: int, mesh, lr_scale=None, l2_weight: float = 0.0
) -> Callable:
    """`(state, global batch, rng) -> (state, metrics)`, data-parallel, state donated.

    `lr_scale`, `l2_weight`: as in `train_step`.
    """
    return parallel.data_parallel(
        functools.partial(
            train_step,
            model=model,
            tx=tx,
            num_levels=num_levels,
            lr_scale=lr_scale,
            l2_weight=l2_weight,
        ),
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
