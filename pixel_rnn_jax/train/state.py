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
