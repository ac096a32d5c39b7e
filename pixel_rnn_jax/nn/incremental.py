"""One-pixel versions of the masked layers: the pieces of every model's cached body.

The cached sampler (`pixel_rnn_jax.sampling.cached`) evaluates a model one pixel at a time
from caches. Each model module defines its `CachedBody` beside its Linen layer, from the
masked kernels read back out of the layer's own parameters with the helpers here, so that
the cached evaluation uses the same masks (`masks.kernel_mask`) as the full-map layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.nn import masks

Params = Any  # a (nested) dict of arrays
Cache = dict[str, jax.Array]


def causal_rows(kernel: jax.Array, mask_type: str, num_groups: int, num_gates: int = 1):
    """Masks a `[kh, kw, in, out]` kernel as `MaskedConv2D` does; keeps rows 0 .. kh//2.

    The rows below the centre are entirely masked, so a pixel's value only needs the
    `kh//2 + 1` rows of the map at and above it.
    """
    mask = masks.kernel_mask(kernel.shape, mask_type, num_groups, num_gates)
    return (kernel * jnp.asarray(mask))[: kernel.shape[0] // 2 + 1]


def masked_dense(params: Params, num_groups: int, num_gates: int = 1) -> Params:
    """A mask-B 1x1 convolution's parameters as a `[in, out]` matrix and its bias."""
    kernel = causal_rows(params["kernel"], "B", num_groups, num_gates)[0, 0]
    return {"kernel": kernel, "bias": params["bias"]}


def in_compute_dtype(params: Params, dtype) -> Params:
    """Every floating array of prepared parameters cast to the model's compute dtype."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
    )


def dense(params: Params, x: jax.Array, out_dtype=None) -> jax.Array:
    """`x [batch, in] @ kernel + bias` (a 1x1 convolution at one pixel).

    The product runs in the kernel's dtype; `out_dtype` (e.g. float32 logits from bfloat16
    operands) accumulates and returns it in another.
    """
    kernel = params["kernel"]
    out_dtype = out_dtype or kernel.dtype
    y = jnp.matmul(x.astype(kernel.dtype), kernel, preferred_element_type=out_dtype)
    return y + params["bias"].astype(out_dtype)


def window_conv(window: jax.Array, kernel: jax.Array) -> jax.Array:
    """A convolution's value at one pixel from its causal window, without the bias.

    Args:
      window: [batch, kh//2 + 1, kw, in] map values at rows i - kh//2 .. i and columns
        j - kw//2 .. j + (kw - 1)//2 (those right of the centre on row i are masked).
      kernel: [kh//2 + 1, kw, in, out] from `causal_rows`.

    Returns:
      [batch, out].
    """
    # One matmul over the flattened window: an einsum with three contracted axes made XLA
    # transpose the window and the kernel at every pixel.
    flat = window.reshape(window.shape[0], -1).astype(kernel.dtype)
    return flat @ kernel.reshape(-1, kernel.shape[-1])


def at_column(x: jax.Array, column: jax.Array, axis: int) -> jax.Array:
    """`x` at a traced index along `axis` (that axis dropped)."""
    return jax.lax.dynamic_index_in_dim(x, column, axis=axis, keepdims=False)


def write_column(x: jax.Array, update: jax.Array, column: jax.Array, axis: int) -> jax.Array:
    """`x` with `update` written at a traced index along `axis`."""
    return jax.lax.dynamic_update_index_in_dim(x, update, column, axis)


def shift_in(register: jax.Array, value: jax.Array, axis: int) -> jax.Array:
    """Drops the oldest entry of a shift register along `axis` and appends `value` there."""
    value = jnp.expand_dims(value, axis)
    return jax.lax.slice_in_dim(jnp.concatenate([register, value], axis), 1, None, axis=axis)


def optional_kernel(layer: Params, name: str) -> jax.Array | None:
    """The kernel of the layer's optional unmasked 1x1 (Dense) `name`, None if it has none.

    The conditioning map's 1x1s (multi-scale) and the class embeddings (conditional models)
    exist only in the models that use them.
    """
    return layer[name]["kernel"] if name in layer else None


def add_conditioning(pre_activation, conditioning, kernel):
    """Adds `conditioning @ kernel` as the layers' `nn.Dense(use_bias=False)` does."""
    if conditioning is None:
        return pre_activation
    return pre_activation + conditioning.astype(kernel.dtype) @ kernel


def stack_layers(**per_layer: list[jax.Array]) -> Cache:
    """A pixel's `column_state`: each named list of per-layer `[batch, ...]` arrays stacked
    into one `[layers, batch, ...]` array."""
    return {name: jnp.stack(values) for name, values in per_layer.items()}


def add_class_embedding(bias, kernel: jax.Array | None, labels_one_hot):
    """A pre-activation's bias plus a layer's class embedding (`nn.Dense`, no bias).

    The class term is the same at every pixel, so the cached bodies fold it into the bias
    once per sample: `[out]` becomes `[batch, out]`.

    Args:
      bias: [out].
      kernel: the class embedding's `[num_classes, out]` kernel, None if the layer has none.
      labels_one_hot: [batch, num_classes] or None (unconditional).

    Raises:
      ValueError: labels were given but the layer has no class embedding.
    """
    if labels_one_hot is None:
        return bias
    if kernel is None:
        raise ValueError(
            "Labels were given but the variables hold no class embeddings; initialise a "
            "model with model.num_classes > 0."
        )
    return bias + labels_one_hot @ kernel


def no_row_work(model: nn.Module, body_params: Params, cache: Cache, *unused) -> Cache:
    """A `CachedBody.start_row` / `end_row` for bodies with nothing to do between rows."""
    del model, body_params, unused
    return cache


class CachedBody(NamedTuple):
    """The model-specific part of incremental evaluation: the body's units at one pixel.

    All functions are pure and take the model (static configuration) first. A pixel is
    evaluated from the caches and returns its `column_state` (small `[layers, batch, ...]`
    arrays), which `write` adds to the caches afterwards; so the channels of a pixel are all
    evaluated from the same caches. Within a row every row-sized cache is either only read
    or only written, and values read back within the row live in small carries: XLA then
    updates the caches in place instead of copying them at every pixel.
    """

    # (model, params, one-hot labels [batch, num_classes] or None) -> body parameters
    # (masked kernels; biases with the class embeddings folded in), from variables['params'].
    prepare: Callable[..., Params]
    # (model, batch, width) -> caches for the top row.
    init: Callable[[nn.Module, int, int], Cache]
    # (model, body parameters, caches) -> caches, before the pixels of a row.
    start_row: Callable[[nn.Module, Params, Cache], Cache]
    # (model, body parameters, caches, first-layer features [batch, 2h], column,
    #  conditioning [batch, c] at the pixel or None)
    #   -> (column_state, the output [batch, 2h] of every unit).
    pixel: Callable[..., tuple[Cache, list[jax.Array]]]
    # (model, caches, column_state, column) -> caches.
    write: Callable[[nn.Module, Cache, Cache, jax.Array], Cache]
    # (model, body parameters, caches, image row [batch, width, channels] in [-1, 1],
    #  conditioning row [batch, width, c] or None) -> caches, after the last pixel of a row.
    end_row: Callable[..., Cache]
