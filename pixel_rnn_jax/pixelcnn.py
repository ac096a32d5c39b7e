"""PixelCNN body: residual blocks of mask-B convolutions (paper Figure 5, right)."""

from __future__ import annotations

import jax
from flax import linen as nn

from pixel_rnn_jax import layers


class PixelCNNBlock(nn.Module):
    """Residual block 2h -> ReLU, 1x1 -> h -> ReLU, kxk -> h -> ReLU, 1x1 -> 2h (+ input).

    Maps [batch, height, width, 2h] -> [batch, height, width, 2h]; every convolution is
    mask B, so the block preserves raster and colour causality.
    """

    hidden_dim: int  # h; input and output have 2h features
    num_groups: int = 1  # colour groups (3 for RGB)
    kernel_size: int = 3  # spatial size of the middle convolution
    use_residual: bool = True  # add the block input to its output

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
    ) -> jax.Array:
        """Args: x [batch, height, width, 2h]; conditioning: optional [batch, height, width, c]
        map known in full (multi-scale), added to the k x k convolution's pre-activation."""
        del context  # PixelCNN has no use for the full-context image
        y = layers.masked_1x1(self.hidden_dim, self.num_groups, name="reduce")(nn.relu(x))
        y = layers.MaskedConv2D(
            self.hidden_dim,
            (self.kernel_size, self.kernel_size),
            "B",
            num_groups=self.num_groups,
            name="conv",
        )(nn.relu(y))
        if conditioning is not None:
            # The block's masked spatial map plays the LSTM input-to-state map's role; the
            # 1x1 is unmasked since the conditioning map holds no pixel of x.
            y = y + nn.Dense(self.hidden_dim, use_bias=False, name="conditioning")(conditioning)
        y = layers.masked_1x1(x.shape[-1], self.num_groups, name="expand")(nn.relu(y))
        return x + y if self.use_residual else y
