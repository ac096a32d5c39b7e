"""Masked convolutions and the small pieces shared by every model.

Shapes follow `[batch, height, width, features]` throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from pixel_rnn_jax.nn import masks

default_kernel_init = nn.initializers.lecun_normal()


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

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, height, width, in_features] -> [batch, height, width, features]."""
        chex.assert_rank(x, 4)
        kh, kw = self.kernel_size
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel", default_kernel_init, (kh, kw, in_features, self.features), jnp.float32
        )
        taps = [(a, b) for a in range(kh) for b in range(kw)]
        if self.mask_type is not None:
            mask = masks.kernel_mask(kernel.shape, self.mask_type, self.num_groups, self.num_gates)
            kernel = kernel * jnp.asarray(mask)
            # Kernel positions that the mask zeroes for every feature pair add nothing:
            # a causal mask drops about half of them (1x3 mask B: 1 of 3, 7x7 mask A: 24).
            taps = [(a, b) for a, b in taps if mask[a, b].any()]
        y = conv_as_matmul(x, kernel, taps)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y


def conv_as_matmul(x: jax.Array, kernel: jax.Array, taps: Sequence[tuple[int, int]]) -> jax.Array:
    """A stride-1 convolution centred at `(kh // 2, kw // 2)`, as one matmul over `taps`.

    Stacks the shifted input of every listed kernel position along the features (im2col)
    and multiplies by the matching kernel rows. On XLA:CPU this ran faster than
    `lax.conv_general_dilated` forward and backward (the weight-gradient conv especially),
    and it lets masked layers skip the kernel positions that their mask zeroes entirely.

    Args:
      x: [batch, height, width, in_features].
      kernel: [kh, kw, in_features, out_features].
      taps: the kernel positions (a, b) to use; the others must be zero (or unwanted).

    Returns:
      [batch, height, width, out_features], zero padding outside the image.
    """
    kh, kw = kernel.shape[:2]
    if (kh, kw) == (1, 1):
        return matmul_2d(x, kernel[0, 0])
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    # [batch, height, width, len(taps) * in_features], tap-major like the kernel rows below.
    patches = jnp.concatenate([padded[:, a : a + height, b : b + width] for a, b in taps], -1)
    return matmul_2d(patches, jnp.concatenate([kernel[a, b] for a, b in taps], axis=0))


def matmul_2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over the last axis, computed as one `[positions, in] @ [in, out]` matmul.

    The same values as `x @ kernel`, but the leading axes are flattened first, so the kernel
    gradient is a dot with ONE contracting axis. With several (batch, height, width) XLA:CPU
    emitted a slower dot plus a transposing copy (measured in WORKSPACE_NOTES.md).

    Args:
      x: [..., in_features].
      kernel: [in_features, out_features].

    Returns:
      [..., out_features].
    """
    return (x.reshape(-1, x.shape[-1]) @ kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def masked_1x1(features: int, num_groups: int, name: str | None = None) -> MaskedConv2D:
    """A mask-B 1x1 convolution: mixes features within a pixel, respecting colour order."""
    return MaskedConv2D(features, (1, 1), "B", num_groups=num_groups, name=name)


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

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, height, width, features] -> logits.

        Returns:
          [batch, height, width, channels] when `num_levels == 2`, else
          [batch, height, width, channels, num_levels].
        """
        logits_per_channel = 1 if self.num_levels == 2 else self.num_levels
        x = nn.relu(x)
        x = masked_1x1(self.output_dim, self.num_channels, name=OUTPUT_HIDDEN)(x)
        x = nn.relu(x)
        x = masked_1x1(
            self.num_channels * logits_per_channel, self.num_channels, name=OUTPUT_LOGITS
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
