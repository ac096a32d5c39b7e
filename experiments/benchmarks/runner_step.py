"""The train step the runner trains with, set up for timing outside the loop.

Every benchmark and the profiler time this program: `train.make_train_step` (global-norm
clipping, RMSProp, the health metrics, `jax.jit(jax.shard_map(...))` over a data mesh, the
state donated), so that what is benchmarked is what is trained.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from pixel_rnn_jax import parallel, train

# The runner's optimiser at the named experiments' settings (experiments/configs/base.py).
OPTIMIZER = {
    "optimizer": "rmsprop",
    "learning_rate": 1e-3,
    "rmsprop_decay": 0.95,
    "eps": 1e-8,
    "grad_clip_norm": 100.0,
}


def optimizer():
    """`train.make_optimizer` at `OPTIMIZER`: clipping followed by Torch-style RMSProp."""
    return train.make_optimizer(ml_collections.ConfigDict(OPTIMIZER))


def runner_train_step(
    model: Any,
    num_levels: int,
    images: np.ndarray,
    *,
    devices: Sequence[jax.Device] | None = None,
    seed: int = 0,
) -> tuple[Callable, Any, dict[str, jax.Array], jax.Array]:
    """The runner's train step and its arguments, placed on a data mesh over `devices`.

    Args:
      model: a model from `models.build_model`.
      num_levels: 2 or 256.
      images: integer `[global_batch, height, width, channels]` (one batch, reused).
      devices: the mesh's devices; default the first device only.
      seed: seeds the parameters.

    Returns:
      (step, state, batch, key): `step(state, batch, key) -> (state, metrics)` with the
      state donated, so each call must be given the state the previous one returned.
    """
    mesh = parallel.make_mesh(list(devices) if devices is not None else jax.devices()[:1])
    tx = optimizer()
    init = functools.partial(
        train.init_train_state, model=model, tx=tx, image_shape=tuple(images.shape[1:])
    )
    state = jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(
        jax.random.PRNGKey(seed)
    )
    host_batch = {"image": np.asarray(images, np.int32)}
    if getattr(model, "num_classes", 0):  # class-conditional: labels 0, 1, 2, ... in turn
        host_batch["label"] = np.arange(len(images), dtype=np.int32) % model.num_classes
    batch = parallel.shard_batch(host_batch, mesh)
    key = parallel.replicate(jax.random.PRNGKey(seed + 1), mesh)
    return train.make_train_step(model, tx, num_levels, mesh), state, batch, key


def abstract_runner_train_step(
    model: Any,
    num_levels: int,
    batch_shape: Sequence[int],
    *,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[Callable, Any, dict[str, jax.ShapeDtypeStruct], jax.ShapeDtypeStruct]:
    """`runner_train_step` without allocating anything: shapes, dtypes and shardings only.

    For `step.lower(state, batch, key)`: compile-only memory planning
    (`memory_analysis()`) and `jax.export` for platforms this machine does not have.

    Args:
      model: a model from `models.build_model`.
      num_levels: 2 or 256.
      batch_shape: `[global_batch, height, width, channels]`.
      devices: the mesh's devices; default the first device only.

    Returns:
      (step, abstract state, abstract batch, abstract key).
    """
    mesh = parallel.make_mesh(list(devices) if devices is not None else jax.devices()[:1])
    tx = optimizer()
    init = functools.partial(
        train.init_train_state, model=model, tx=tx, image_shape=tuple(batch_shape[1:])
    )
    replicated = parallel.replicated_sharding(mesh)
    state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        jax.eval_shape(init, jax.random.PRNGKey(0)),
    )
    batch = {
        "image": jax.ShapeDtypeStruct(
            tuple(batch_shape), np.int32, sharding=parallel.batch_sharding(mesh)
        )
    }
    if getattr(model, "num_classes", 0):  # class-conditional: the labels [global_batch]
        batch["label"] = jax.ShapeDtypeStruct(
            (batch_shape[0],), np.int32, sharding=parallel.batch_sharding(mesh)
        )
    key = jax.ShapeDtypeStruct((2,), np.uint32, sharding=replicated)
    return train.make_train_step(model, tx, num_levels, mesh), state, batch, key
