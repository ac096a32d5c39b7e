"""Multi-Scale PixelRNN: an unconditional PixelRNN of a subsampled image, and a conditional one.

The small image is the subsample `s = x[:, ::f, ::f]` (factor f: 64x64 -> 32x32 for f = 2).
Since `x <-> (s, rest)` is a bijection,

    log p(x) = log p_small(s) + sum over positions p off the grid of log p_cond(x_p | x_<p, s),

where the grid is `{(i, j): i % f == 0 and j % f == 0}` (all channels of those pixels) and
`x_<p` is raster-then-channel order in the full image. `MultiScalePixelRNN` returns full-size
logits whose grid positions hold the small model's logits (computed on s, scattered back)
and whose other positions hold the conditional network's, so the runner's
`likelihood.log_likelihood(model.apply(variables, x), x, num_levels)` is exactly the joint,
and the conditional network never pays again for the pixels s already fixes.

Conditioning (paper section 3.5): s is encoded by an unmasked convolutional stack (s is
fully known, nothing needs masking), upsampled to the full size by an f x f transposed
convolution with stride f, and every layer of the conditional network adds a 1x1 unmasked
convolution of that `[batch, height, width, cond_dim]` map to its input-to-state
pre-activations (the `conditioning` argument of the body layers).

The model only: its likelihood split into the two parts is
`likelihood.multiscale_log_likelihood_parts`, its sampler `sampling.multiscale`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from pixel_rnn_jax.models import pixel_rnn
from pixel_rnn_jax.nn import layers


def default_multiscale_config() -> ml_collections.ConfigDict:
    """The `model.multiscale` fields and their defaults (see experiments/configs/base.py)."""
    config = ml_collections.ConfigDict()
    config.factor = 2  # f: the small image is x[::f, ::f]
    config.conditional_name = "row_lstm"  # body of the conditional network (pixel_rnn.BODIES)
    config.cond_dim = 32  # c: features of the upsampled conditioning map
    config.encoder_layers = 2  # unmasked 3x3 ReLU convolutions on s before the deconvolution
    config.small = ml_collections.ConfigDict()
    config.small.name = "row_lstm"  # body of the unconditional small-image network
    config.small.num_layers = 7
    config.small.hidden_dim = 16
    return config


# ---------------------------------------------------------------------------------------
# Pure helpers: the grid, and which positions belong to which part.


def subsample(images: jax.Array, factor: int) -> jax.Array:
    """`[batch, height, width, channels] -> [batch, ceil(height/f), ceil(width/f), channels]`."""
    return images[:, ::factor, ::factor]


def on_grid(rows, columns, factor: int):
    """True where pixel (row, column) belongs to the small image: the one definition.

    Works on integers, NumPy arrays and traced JAX arrays alike (broadcasting).
    """
    return (rows % factor == 0) & (columns % factor == 0)


def position_on_grid(position, width: int, channels: int, factor: int):
    """`on_grid` of a raster-then-channel position (the walks' index) of a `width`-wide image."""
    row, rest = divmod(position, width * channels)
    return on_grid(row, rest // channels, factor)


def grid_mask(height: int, width: int, factor: int) -> np.ndarray:
    """bool `[height, width]`: True where the pixel belongs to the small image."""
    return on_grid(np.arange(height)[:, None], np.arange(width)[None, :], factor)


def merge_logits(small_logits: jax.Array, conditional_logits: jax.Array, factor: int):
    """Writes the small model's logits over the conditional ones at the grid positions.

    Args:
      small_logits: logits of s, `[batch, ceil(H/f), ceil(W/f), channels(, levels)]`.
      conditional_logits: the conditional network's logits `[batch, H, W, channels(, levels)]`.
      factor: f.

    Returns:
      Logits shaped like `conditional_logits`; the conditional network's logits at the grid
      are dropped, so they get no gradient (those pixels are paid for by the small model).
    """
    return conditional_logits.at[:, ::factor, ::factor].set(small_logits)


def split_positions(height: int, width: int, channels: int, factor: int):
    """Raster-then-channel positions of the full image, split by part.

    Returns:
      (grid, rest): sorted int32 arrays. `grid[k]` is the full-image position of the small
      image's position k (the map is monotone, so both orders agree); `rest` are the
      positions the conditional network models.
    """
    on_grid = np.repeat(grid_mask(height, width, factor).reshape(-1), channels)
    positions = np.arange(height * width * channels, dtype=np.int32)
    return positions[on_grid], positions[~on_grid]


# ---------------------------------------------------------------------------------------
# Modules.


class ConditioningNetwork(nn.Module):
    """s (in [-1, 1]) -> unmasked 3x3 ReLU convs -> f x f stride-f deconvolution -> full size."""

    features: int  # c: features of the conditioning map
    factor: int  # f
    num_layers: int = 2  # unmasked 3x3 convolutions before the deconvolution
    dtype: Any = jnp.float32  # compute dtype of the convolutions

    @nn.compact
    def __call__(self, small_inputs: jax.Array, height: int, width: int) -> jax.Array:
        """`[batch, ceil(H/f), ceil(W/f), channels]` -> `[batch, height, width, features]`."""
        x = small_inputs
        for index in range(self.num_layers):
            # s is known in full: no mask, and 'SAME' padding may read every neighbour.
            x = nn.Conv(self.features, (3, 3), dtype=self.dtype, name=f"encoder_{index}")(x)
            x = nn.relu(x)
        f = self.factor
        # Stride f with an f x f kernel: every full-size pixel gets a learned function of its
        # offset (i % f, j % f) within the block of the small pixel (i // f, j // f).
        x = nn.ConvTranspose(
            self.features, (f, f), strides=(f, f), padding="VALID", dtype=self.dtype, name="up"
        )(x)
        return x[:, :height, :width]  # [batch, height, width, features]


class MultiScalePixelRNN(nn.Module):
    """p(x) = p_small(x[::f, ::f]) p_cond(rest | x[::f, ::f]), same contract as PixelRNN."""

    small: pixel_rnn.PixelRNN  # unconditional model of s
    conditional: pixel_rnn.PixelRNN  # conditional model of the full image given s
    factor: int = 2  # f
    cond_dim: int = 32  # c: features of the upsampled conditioning map
    encoder_layers: int = 2  # unmasked 3x3 convolutions encoding s

    def setup(self):
        self.encoder = ConditioningNetwork(
            self.cond_dim, self.factor, self.encoder_layers, dtype=self.conditional.dtype
        )

    @property
    def num_levels(self) -> int:
        return self.conditional.num_levels

    @property
    def num_channels(self) -> int:
        return self.conditional.num_channels

    @property
    def num_classes(self) -> int:
        return self.conditional.num_classes

    def __call__(self, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Joint logits for integer `images` [batch, height, width, channels].

        `labels`: integer `[batch]` for a class-conditional model (both networks condition
        on them: p(x | y) = p_small(s | y) p_cond(rest | s, y)), None for an unconditional one.

        Returns:
          [batch, height, width, channels] Bernoulli logits when `num_levels == 2`, else
          [batch, height, width, channels, num_levels]; grid positions hold p_small's.
        """
        layers.validate_images(images, self.num_channels, self.num_levels)
        # The labels are checked by each network's `PixelRNN.logits_from_inputs`.
        return self.logits_from_inputs(
            layers.preprocess_images(images, self.num_levels), labels=labels
        )

    def logits_from_inputs(self, inputs: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Joint logits from the float encoding `[batch, height, width, channels]` in [-1, 1]."""
        small_inputs = subsample(inputs, self.factor)
        small_logits = self.small.logits_from_inputs(small_inputs, labels=labels)
        conditional_logits = self.conditional_logits(inputs, small_inputs, labels)
        return merge_logits(small_logits, conditional_logits, self.factor)

    def small_logits(self, small_images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """The small model's logits for integer s `[batch, ceil(H/f), ceil(W/f), channels]`."""
        return self.small(small_images, labels)

    def conditioning(self, small_inputs: jax.Array, height: int, width: int) -> jax.Array:
        """The upsampled conditioning map `[batch, height, width, cond_dim]` of s in [-1, 1]."""
        return self.encoder(small_inputs, height, width)

    def conditional_logits(
        self, inputs: jax.Array, small_inputs: jax.Array, labels: jax.Array | None = None
    ) -> jax.Array:
        """The conditional network's logits at every position, given x and s separately.

        Args:
          inputs: x in [-1, 1], `[batch, height, width, channels]`; the logits at p depend
            only on its positions before p.
          small_inputs: s in [-1, 1], `[batch, ceil(H/f), ceil(W/f), channels]`; seen whole.
          labels: integer `[batch]` (class-conditional models only), seen whole too.

        Returns:
          Logits shaped like the model's output (meaningful off the grid only).
        """
        conditioning = self.conditioning(small_inputs, inputs.shape[1], inputs.shape[2])
        return self.conditional_from_map(inputs, conditioning, labels)

    def conditional_from_map(
        self, inputs: jax.Array, conditioning: jax.Array, labels: jax.Array | None = None
    ) -> jax.Array:
        """The conditional network's logits given the conditioning map (computed once)."""
        return self.conditional.logits_from_inputs(inputs, conditioning=conditioning, labels=labels)


def build_multiscale(config: ml_collections.ConfigDict) -> MultiScalePixelRNN:
    """Builds the model from a `model` config with `name == 'multiscale'`.

    The conditional network uses the top-level model fields with the body
    `multiscale.conditional_name`; the small network the same fields except its body, layer
    count and h (`multiscale.small`). `full_context` applies to whichever is a Diagonal BiLSTM.
    """
    ms = config.multiscale
    if isinstance(ms.factor, bool) or not isinstance(ms.factor, int) or ms.factor < 2:
        raise ValueError(f"multiscale.factor must be an integer >= 2, got {ms.factor!r}.")
    if ms.cond_dim < 1 or ms.encoder_layers < 0:
        raise ValueError(
            f"multiscale.cond_dim must be >= 1 and multiscale.encoder_layers >= 0; got "
            f"{ms.cond_dim} and {ms.encoder_layers}."
        )
    names = (ms.small.name, ms.conditional_name)
    for name in names:
        if name not in pixel_rnn.BODIES:
            raise ValueError(
                f"Unknown model name {name!r} in model.multiscale; choose one of "
                f"{sorted(pixel_rnn.BODIES)}."
            )
    if config.full_context and "diagonal_bilstm" not in names:
        raise ValueError("full_context only applies to a 'diagonal_bilstm' part.")

    def part(name: str, **sizes) -> pixel_rnn.PixelRNN:
        part_config = ml_collections.ConfigDict(config.to_dict())
        part_config.name = name
        part_config.full_context = bool(config.full_context) and name == "diagonal_bilstm"
        part_config.update(sizes)
        return pixel_rnn.build_pixel_rnn(part_config)

    return MultiScalePixelRNN(
        small=part(ms.small.name, num_layers=ms.small.num_layers, hidden_dim=ms.small.hidden_dim),
        conditional=part(ms.conditional_name),
        factor=ms.factor,
        cond_dim=ms.cond_dim,
        encoder_layers=ms.encoder_layers,
    )


# ---------------------------------------------------------------------------------------
# Parts of the model's variables.


def small_variables(variables):
    """The small model's variables, to use `model.small` on its own (e.g. to sample s)."""
    return {"params": variables["params"]["small"]}


def conditional_variables(variables):
    """The conditional network's variables, to walk `model.conditional` on its own."""
    return {"params": variables["params"]["conditional"]}
