"""The train state and the optimiser: everything a checkpoint holds besides the data position."""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pixel_rnn_jax import errors


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint must hold to continue training bit-exactly (besides data)."""

    step: jax.Array  # int32 scalar: optimiser updates applied so far
    params: Any  # the model's 'params' collection
    opt_state: Any  # optax state of `make_optimizer(config.train)`


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping followed by the configured optimiser at `train.learning_rate`.

    A decay of the rate is not part of it: see `learning_rate_scale`.

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


def learning_rate_scale(train_config: ml_collections.ConfigDict) -> optax.Schedule | None:
    """The multiplier of `train.learning_rate` at each step, or None for a constant rate.

    Updates are numbered by the step they start from, 0 .. num_steps - 1 (update k makes
    checkpoint step k + 1). With `train.lr_decay_start` set, update `lr_decay_start` runs at
    `learning_rate`, and the rate falls linearly from there so that the last update,
    `num_steps - 1`, runs at `learning_rate * train.lr_final_fraction`. `steps.train_step`
    multiplies the optimiser's updates by it (the same as scaling RMSProp's or Adam's rate),
    reading the step from the train state. It is not passed to optax as a schedule because
    that would add a step count to the optimiser state: then a checkpoint of a constant-rate
    run could not restore into a decaying one, and annealing a run that is still improving
    (resume it with a larger `num_steps` and a decay start) would mean starting again.

    Args:
      train_config: `config.train` (num_steps, lr_decay_start, lr_final_fraction).

    Returns:
      `step -> multiplier` (1 before the decay starts), or None when `lr_decay_start` is
      unset.

    Raises:
      ConfigError: the decay starts outside [0, num_steps - 1) (at num_steps - 1 or later it
        would decay nothing) or the final fraction is outside [0, 1].
    """
    start = train_config.get("lr_decay_start")
    if start is None:
        return None
    final = train_config.get("lr_final_fraction", 0.0)
    last = train_config.num_steps - 1  # the last update that runs
    if not 0 <= start < last:
        raise errors.ConfigError(
            f"train.lr_decay_start={start} must be in [0, {last}) for train.num_steps="
            f"{train_config.num_steps}: update lr_decay_start runs at the full rate and the "
            f"last one ({last}) at lr_final_fraction, so a later start decays nothing; leave "
            "it unset for a constant learning rate."
        )
    if not 0.0 <= final <= 1.0:
        raise errors.ConfigError(f"train.lr_final_fraction={final} must be in [0, 1].")
    return optax.linear_schedule(
        init_value=1.0,
        end_value=final,
        transition_steps=last - start,
        transition_begin=start,
    )


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
    labels = jnp.zeros((1,), jnp.int32) if model.num_classes else None  # class-conditional
    variables = model.init(rng, images, labels)
    extra = set(variables) - {"params"}
    if extra:
        raise ValueError(f"Model has non-parameter collections {extra}; the runner expects none.")
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def abstract_state(init_fn: Callable, rng: jax.Array, sharding) -> Any:
    """Shapes, dtypes and shardings of the train state, without allocating it."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(init_fn, rng),
    )
