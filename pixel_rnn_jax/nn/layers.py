"""Masked convolutions and the small pieces shared by every model.

Shapes follow `[batch, height, width, features]` throughout.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from pixel_rnn_jax.nn import masks

default_kernel_init = nn.initializers.lecun_normal()

# `config.model.dtype` values: the compute dtype of every convolution and matmul. Parameters
# (and so the optimiser state) are float32 whatever it is.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype of a `config.model.dtype` name; ValueError for any other name."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}; got {name!r}.")
    return DTYPES[name]


def validate_images(images: jax.Array, num_channels: int, num_levels: int) -> None:
    """Raises ValueError unless `images` are integers `[batch, height, width, num_channels]`.

    The value range `[0, num_levels)` is checked whenever the values are concrete (outside
    `jit`); under tracing only shape and dtype can be checked.
    """
    expected = f"integer images [batch, height, width, {num_channels}] in [0, {num_levels})"
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"Expected {expected}; got an array of shape {shape}.")
    if shape[-1] != num_channels:
        raise ValueError(
            f"Expected {expected}; got {shape[-1]} channels (shape {tuple(shape)}). The model "
            f"was built with num_channels={num_channels}."
        )
    if not jnp.issubdtype(images.dtype, jnp.integer):
        raise ValueError(
            f"Expected {expected}; got dtype {images.dtype}. Quantise the images to integer "
            f"levels first (e.g. np.round(x * {num_levels - 1}).astype(np.int32))."
        )
    if not isinstance(images, jax.core.Tracer) and images.size:
        values = np.asarray(images)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_levels:
            raise ValueError(f"Expected {expected}; got values in [{low}, {high}].")


def validate_labels(labels: jax.Array | None, batch: int, num_classes: int) -> None:
    """Raises ValueError unless `labels` fit a model with `num_classes` classes (0: none).

    A class-conditional model (`num_classes > 0`) needs integer labels `[batch]` in
    `[0, num_classes)`; an unconditional one (`num_classes == 0`) must get none. As for the
    images, the value range is checked whenever the labels are concrete (outside `jit`).
    """
    if num_classes == 0:
        if labels is not None:
            raise ValueError(
                "Labels were given to an unconditional model (model.num_classes = 0); pass "
                "labels=None, or build the model with model.num_classes > 0."
            )
        return
    expected = f"integer labels [batch] = [{batch}] in [0, {num_classes})"
    if labels is None:
        raise ValueError(
            f"This model is class-conditional (model.num_classes = {num_classes}): pass "
            f"labels=, {expected}."
        )
    shape = getattr(labels, "shape", None)
    if shape is None or tuple(shape) != (batch,):
        raise ValueError(f"Expected {expected}; got shape {shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"Expected {expected}; got dtype {labels.dtype}.")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        values = np.asarray(labels)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"Expected {expected}; got values in [{low}, {high}].")


def one_hot_labels(labels: jax.Array | None, num_classes: int) -> jax.Array | None:
    """float32 `[batch, num_classes]` one-hot codes of integer labels; None stays None.

    The body layers turn the code into a learned per-class bias of their pre-activations
    with a bias-free `Dense` (an embedding table as a matmul, the same at every pixel).
    """
    if labels is None:
        return None
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def preprocess_images(images: jax.Array, num_levels: int) -> jax.Array:
    """Maps integer levels `[0, num_levels)` to floats in `[-1, 1]`, same shape."""
    return images.astype(jnp.float32) * (2.0 / (num_levels - 1)) - 1.0


class MaskedConv2D(nn.Module):
    """2-D convolution whose kernel is multiplied by a causal colour-group mask.

    Input features are split into `num_groups` colour groups with `masks.feature_groups`;
    output features likewise, repeated `num_gates` times (gate-major layout) when the
    convolution produces LSTM gate pre-activations.
    """

    features: int  # output features (num_gates * units when num_gates > 1)
    kernel_size: tuple[int, int]  # (kh, kw); the centre is (kh // 2, kw // 2)
    mask_type: str | None  # 'A', 'B', or None for an unmasked convolution
    num_groups: int = 1  # colour groups: 3 for RGB, 1 for greyscale
    num_gates: int = 1  # >1: output is num_gates blocks of features // num_gates units
    use_bias: bool = True
    dtype: Any = jnp.float32  # compute dtype of the product (the kernel stays float32)
    # Output dtype when it differs from `dtype` (the logits: float32 from bfloat16 operands).
    out_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, height, width, in_features] -> [batch, height, width, features]."""
        chex.assert_rank(x, 4)
        kh, kw = self.kernel_size
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel", default_kernel_init, (kh, kw, in_features, self.features), jnp.float32
        )
        kernel, taps = masked_kernel(kernel, self.mask_type, self.num_groups, self.num_gates)
        out_dtype = self.out_dtype or self.dtype
        y = conv_as_matmul(
            x.astype(self.dtype), kernel.astype(self.dtype), taps, out_dtype=out_dtype
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(out_dtype)
        return y


def masked_kernel(
    kernel: jax.Array, mask_type: str | None, num_groups: int = 1, num_gates: int = 1
) -> tuple[jax.Array, list[tuple[int, int]]]:
    """A convolution kernel times its causal mask, and the kernel positions the mask keeps.

    Args:
      kernel: [kh, kw, in_features, out_features].
      mask_type: 'A', 'B', or None (unmasked: every position kept).
      num_groups, num_gates: see `MaskedConv2D`.

    Returns:
      (masked kernel, taps): taps are the (a, b) positions with any nonzero entry, for
      `conv_as_matmul`.
    """
    kh, kw = kernel.shape[:2]
    taps = [(a, b) for a in range(kh) for b in range(kw)]
    if mask_type is None:
        return kernel, taps
    mask = masks.kernel_mask(kernel.shape, mask_type, num_groups, num_gates)
    # Kernel positions that the mask zeroes for every feature pair add nothing: a causal
    # mask drops about half of them (1x3 mask B: 1 of 3, 7x7 mask A: 24).
    return kernel * jnp.asarray(mask), [(a, b) for a, b in taps if mask[a, b].any()]


def conv_as_matmul(
    x: jax.Array, kernel: jax.Array, taps: Sequence[tuple[int, int]], out_dtype=None
) -> jax.Array:
    """A stride-1 convolution centred at `(kh // 2, kw // 2)`, as one matmul over `taps`.

    Stacks the shifted input of every listed kernel position along the features (im2col)
    and multiplies by the matching kernel rows. On XLA:CPU this ran faster than
    `lax.conv_general_dilated` forward and backward (the weight-gradient conv especially),
    and it lets masked layers skip the kernel positions that their mask zeroes entirely.

    Args:
      x: [batch, height, width, in_features].
      kernel: [kh, kw, in_features, out_features].
      taps: the kernel positions (a, b) to use; the others must be zero (or unwanted).
      out_dtype: see `matmul_2d`.

    Returns:
      [batch, height, width, out_features], zero padding outside the image.
    """
    kh, kw = kernel.shape[:2]
    if (kh, kw) == (1, 1):
        return matmul_2d(x, kernel[0, 0], out_dtype)
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    # [batch, height, width, len(taps) * in_features], tap-major like the kernel rows below.
    patches = jnp.concatenate([padded[:, a : a + height, b : b + width] for a, b in taps], -1)
    return matmul_2d(patches, jnp.concatenate([kernel[a, b] for a, b in taps], axis=0), out_dtype)


def matmul_2d(x: jax.Array, kernel: jax.Array, out_dtype=None) -> jax.Array:
    """`x @ kernel` over the last axis, computed as one `[positions, in] @ [in, out]` matmul.

    The same values as `x @ kernel`, but the leading axes are flattened first, so the kernel
    gradient is a dot with ONE contracting axis. With several (batch, height, width) XLA:CPU
    emitted a slower dot plus a transposing copy (measured in WORKSPACE_NOTES.md).

    The product runs in the kernel's dtype (the compute dtype): `x` is cast to it.

    Args:
      x: [..., in_features].
      kernel: [in_features, out_features].
      out_dtype: None: the kernel's dtype. float32 with a bfloat16 kernel: the product
        accumulated and returned in float32, with bfloat16 products in its gradient too
        (`_mixed_matmul`); the logits use it.

    Returns:
      [..., out_features].
    """
    flat = x.reshape(-1, x.shape[-1]).astype(kernel.dtype)
    if out_dtype is None or jnp.dtype(out_dtype) == kernel.dtype:
        y = flat @ kernel
    else:
        y = _mixed_matmul(flat, kernel, jnp.dtype(out_dtype))
    return y.reshape(*x.shape[:-1], kernel.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(x: jax.Array, kernel: jax.Array, out_dtype) -> jax.Array:
    """`x @ kernel` of low-precision operands, accumulated and returned in `out_dtype`.

    Autodiff of `preferred_element_type` would differentiate with an `out_dtype` cotangent
    against a low-precision operand (a mixed-dtype product, upcast to float32); here the
    cotangent is rounded to the operands' dtype once and both gradient products run in it;
    the kernel gradient is accumulated in `out_dtype`, then rounded to the kernel's dtype
    like every other parameter gradient of a bfloat16 model.
    """
    return jnp.matmul(x, kernel, preferred_element_type=out_dtype)


def _mixed_matmul_fwd(x, kernel, out_dtype):
    return _mixed_matmul(x, kernel, out_dtype), (x, kernel)


def _mixed_matmul_bwd(out_dtype, residuals, d_out):
    x, kernel = residuals
    d_out = d_out.astype(kernel.dtype)
    d_x = jnp.matmul(d_out, kernel.T)
    d_kernel = jnp.matmul(x.T, d_out, preferred_element_type=out_dtype).astype(kernel.dtype)
    return d_x, d_kernel


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def masked_1x1(
    features: int, num_groups: int, name: str | None = None, dtype=jnp.float32, out_dtype=None
) -> MaskedConv2D:
    """A mask-B 1x1 convolution: mixes features within a pixel, respecting colour order."""
    return MaskedConv2D(
        features, (1, 1), "B", num_groups=num_groups, dtype=dtype, out_dtype=out_dtype, name=name
    )


OUTPUT_HIDDEN = "hidden"  # OutputStack's first mask-B 1x1 (to output_dim features)
OUTPUT_LOGITS = "logits"  # OutputStack's second mask-B 1x1 (to the logits)


class OutputStack(nn.Module):
    """ReLU -> 1x1 mask-B conv, twice, then logits per channel (and per level).

    Categorical logits are produced channel-major (`[channels, levels]` flattened), so the
    output groups of the final mask-B layer are exactly the colour channels: R logits see
    only context, G logits also R, B logits also R and G.
    """

    num_channels: int  # 1 (greyscale) or 3 (RGB)
    num_levels: int  # 2: one Bernoulli logit per channel; otherwise one logit per level
    output_dim: int  # features of the hidden 1x1 layer
    dtype: Any = jnp.float32  # compute dtype of both 1x1s; the logits are float32 always

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, height, width, features] -> logits.

        Returns:
          [batch, height, width, channels] when `num_levels == 2`, else
          [batch, height, width, channels, num_levels].
        """
        logits_per_channel = 1 if self.num_levels == 2 else self.num_levels
        x = nn.relu(x)
        x = masked_1x1(self.output_dim, self.num_channels, OUTPUT_HIDDEN, self.dtype)(x)
        x = nn.relu(x)
        # float32 logits: the log-softmax and the likelihood must not see bfloat16 rounding.
        x = masked_1x1(
            self.num_channels * logits_per_channel,
            self.num_channels,
            OUTPUT_LOGITS,
            self.dtype,
            out_dtype=jnp.float32,
        )(x)
        if self.num_levels == 2:
            return x
        return x.reshape(*x.shape[:-1], self.num_channels, self.num_levels)


def sum_features(maps: Sequence[jax.Array]) -> jax.Array:
    """Elementwise sum of equally shaped feature maps."""
    total = maps[0]
    for m in maps[1:]:
        total = total + m
    return total
