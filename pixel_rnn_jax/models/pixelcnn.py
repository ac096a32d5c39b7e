"""PixelCNN body: residual blocks of mask-B convolutions (paper Figure 5, right).

Also the block's cached body for sampling: the 1x1s at the pixel and the k x k mask-B
convolution of a window of the block's cached activations (its k//2 rows above and the
current row: the queues of Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.models import residual
from pixel_rnn_jax.nn import incremental, layers

KIND = "pixelcnn"  # the model name in the registry and the prefix of its blocks' names
# Parameter names inside a PixelCNNBlock, shared by the block and its cached body.
REDUCE = "reduce"  # mask-B 1x1, 2h -> h
CONV = "conv"  # mask-B k x k, h -> h
CONDITIONING = "conditioning"  # unmasked 1x1 of the conditioning map (multi-scale only)
CLASS_EMBEDDING = "class_embedding"  # [num_classes, h] per-class bias (conditional only)
EXPAND = "expand"  # mask-B 1x1, h -> 2h


class PixelCNNBlock(nn.Module):
    """Residual block 2h -> ReLU, 1x1 -> h -> ReLU, kxk -> h -> ReLU, 1x1 -> 2h (+ input).

    Maps [batch, height, width, 2h] -> [batch, height, width, 2h]; every convolution is
    mask B, so the block preserves raster and colour causality.
    """

    hidden_dim: int  # h; input and output have 2h features
    num_groups: int = 1  # colour groups (3 for RGB)
    kernel_size: int = 3  # spatial size of the middle convolution
    use_residual: bool = True  # add the block input to its output
    dtype: Any = jnp.float32  # compute dtype of the convolutions

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
        labels_one_hot: jax.Array | None = None,
    ) -> jax.Array:
        """Args: x [batch, height, width, 2h]; conditioning: optional [batch, height, width, c]
        map known in full (multi-scale), added to the k x k convolution's pre-activation;
        labels_one_hot: optional [batch, num_classes] class codes, whose learned embedding is
        added there too, the same at every pixel."""
        del context  # PixelCNN has no use for the full-context image
        y = layers.masked_1x1(self.hidden_dim, self.num_groups, REDUCE, self.dtype)(nn.relu(x))
        y = layers.MaskedConv2D(
            self.hidden_dim,
            (self.kernel_size, self.kernel_size),
            "B",
            num_groups=self.num_groups,
            dtype=self.dtype,
            name=CONV,
        )(nn.relu(y))
        if conditioning is not None:
            # The block's masked spatial map plays the LSTM input-to-state map's role; the
            # 1x1 is unmasked since the conditioning map holds no pixel of x.
            y = y + nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype, name=CONDITIONING)(
                conditioning
            )
        if labels_one_hot is not None:
            class_bias = nn.Dense(
                self.hidden_dim, use_bias=False, dtype=self.dtype, name=CLASS_EMBEDDING
            )
            y = y + class_bias(labels_one_hot)[:, None, None]
        y = layers.masked_1x1(x.shape[-1], self.num_groups, EXPAND, self.dtype)(nn.relu(y))
        return x + y if self.use_residual else y


def make_unit(model: nn.Module, index: int) -> nn.Module:
    """Block `index` of a PixelCNN `PixelRNN` (`pixelcnn_<index>`)."""
    return residual.unit_class(model, PixelCNNBlock)(
        model.hidden_dim,
        num_groups=model.num_channels,
        kernel_size=model.recurrent_kernel_size,
        use_residual=model.use_residual,
        dtype=model.dtype,
        name=residual.unit_name(KIND, index),
    )


# ---------------------------------------------------------------------------------------
# The cached body (see `sampling.cached`).


def _prepare(
    model: nn.Module, params: incremental.Params, labels_one_hot: jax.Array | None = None
) -> incremental.Params:
    groups = model.num_channels
    return [
        {
            "reduce": incremental.masked_dense(block[REDUCE], groups),
            "conv_kernel": incremental.causal_rows(block[CONV]["kernel"], "B", groups),
            # [h], or [batch, h] with the class embedding of each image's label.
            "conv_bias": incremental.add_class_embedding(
                block[CONV]["bias"],
                incremental.optional_kernel(block, CLASS_EMBEDDING),
                labels_one_hot,
            ),
            "conditioning": incremental.optional_kernel(block, CONDITIONING),  # [c, h]
            "expand": incremental.masked_dense(block[EXPAND], groups),
        }
        for block in residual.unit_params(params, KIND, model.num_layers)
    ]


def _init(model: nn.Module, batch: int, width: int) -> incremental.Cache:
    k, h = model.recurrent_kernel_size, model.hidden_dim
    zeros = lambda *shape: jnp.zeros((model.num_layers, batch, *shape), model.dtype)
    padded_width = k // 2 + width + (k - 1) // 2  # the k x k convolution's zero columns
    # Each block's k x k convolution input, relu(reduce(relu(x))), as in Ramachandran et
    # al.'s queues: the k//2 rows above (read along the row), the current row (written),
    # and its k//2 values left of the pixel (a small carry).
    return {
        "rows_above": zeros(k // 2, padded_width, h),
        "row": zeros(padded_width, h),
        "left": zeros(k // 2, h),
    }


def _start_row(model: nn.Module, body_params, cache: incremental.Cache) -> incremental.Cache:
    del model, body_params
    return {
        "rows_above": incremental.shift_in(cache["rows_above"], cache["row"], axis=2),
        "row": cache["row"],  # every column is rewritten before it is read again
        "left": jnp.zeros_like(cache["left"]),
    }


def _pixel(model, body_params, cache, x, column, conditioning):
    k = model.recurrent_kernel_size
    num_layers, batch, half, _, h = cache["rows_above"].shape
    above = jax.lax.dynamic_slice(
        cache["rows_above"], (0, 0, 0, column, 0), (num_layers, batch, half, k, h)
    )  # rows i - k//2 .. i - 1, columns j - k//2 .. j + (k - 1)//2
    right = jnp.zeros((batch, k - half - 1, h), model.dtype)  # masked: never read
    reduced_states, outputs = [], []
    for index, block in enumerate(body_params):
        reduced = nn.relu(incremental.dense(block["reduce"], nn.relu(x)))
        reduced_states.append(reduced)
        row = jnp.concatenate([cache["left"][index], reduced[:, None], right], axis=1)
        window = jnp.concatenate([above[index], row[:, None]], axis=1)  # [b, k//2 + 1, k, h]
        y = incremental.window_conv(window, block["conv_kernel"]) + block["conv_bias"]
        y = incremental.add_conditioning(y, conditioning, block["conditioning"])
        x = residual.residual(model, x, incremental.dense(block["expand"], nn.relu(y)))
        outputs.append(x)
    return incremental.stack_layers(reduced=reduced_states), outputs


def _write(model: nn.Module, cache, column_state, column: jax.Array) -> incremental.Cache:
    reduced = column_state["reduced"]  # [L, batch, h]
    padded_column = column + model.recurrent_kernel_size // 2
    return {
        **cache,
        "row": incremental.write_column(cache["row"], reduced, padded_column, 2),
        "left": incremental.shift_in(cache["left"], reduced, axis=2),
    }


CACHED_BODY = incremental.CachedBody(
    prepare=_prepare,
    init=_init,
    start_row=_start_row,
    pixel=_pixel,
    write=_write,
    end_row=incremental.no_row_work,
)
