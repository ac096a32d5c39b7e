"""The PixelRNN stack: a mask-A input convolution, a body of units, skips and the output stack.

Every model is the paper's Table 1 stack: a k x k mask-A convolution to 2h features, a body
of `num_layers` residual units (Row LSTM, Diagonal BiLSTM or PixelCNN blocks, chosen from
`BODIES` by name), optional learnable skip connections from every unit to the output, and
the output stack. The stack's one-pixel evaluation for the cached sampler
(`prepare_shell`, `pixel_logits`) sits here too, reading the same parameter names.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from pixel_rnn_jax.models import diagonal_lstm, pixelcnn, residual, row_lstm
from pixel_rnn_jax.nn import incremental, layers, recurrence

INPUT_CONV = "input_conv"  # the k x k mask-A convolution on the image
OUTPUT_STACK = "output_stack"  # layers.OutputStack: ReLU + mask-B 1x1, twice, to logits


def skip_name(index: int) -> str:
    """The parameter-tree name of the skip 1x1 from body unit `index` to the output."""
    return f"skip_{index}"


Body = residual.Body  # what a body kind provides: its unit, cached body and 'latency' stack

# The body kinds by model name: each module defines its unit and its cached body together.
BODIES: dict[str, Body] = {
    row_lstm.KIND: row_lstm.BODY,
    diagonal_lstm.KIND: Body(diagonal_lstm.make_unit, diagonal_lstm.CACHED_BODY),
    pixelcnn.KIND: Body(pixelcnn.make_unit, pixelcnn.CACHED_BODY),
}


class PixelRNN(nn.Module):
    """An autoregressive image model over integer images `[batch, height, width, channels]`."""

    name_in_registry: str  # key of BODIES
    num_layers: int  # body units
    hidden_dim: int  # h
    num_levels: int  # 2 (Bernoulli) or the number of intensity levels (categorical)
    num_channels: int  # 1 or 3
    unroll: recurrence.Unroll = 1  # recurrence driver setting
    full_context: bool = False  # Diagonal BiLSTM only
    first_kernel_size: int = 7  # mask-A input convolution size
    recurrent_kernel_size: int = 3  # Row LSTM k / PixelCNN kernel size
    output_dim: int = 32  # output stack hidden features
    use_residual: bool = True  # residual connections around body units
    use_skip: bool = True  # skip connections from every unit to the output
    num_classes: int = 0  # > 0: class-conditional, p(x | y) for labels y in [0, num_classes)
    dtype: Any = jnp.float32  # compute dtype of convolutions and matmuls (params: float32)
    remat: bool = False  # recompute each body unit in the backward pass (jax.checkpoint)
    schedule: str = "throughput"  # recurrence layout: 'throughput' or 'latency' (recurrence.py)

    def __call__(self, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Logits for integer `images` [batch, height, width, channels] in [0, num_levels).

        `labels`: integer `[batch]` in `[0, num_classes)` for a class-conditional model
        (`num_classes > 0`; then required), None for an unconditional one.

        Returns:
          [batch, height, width, channels] Bernoulli logits when `num_levels == 2`, else
          [batch, height, width, channels, num_levels] categorical logits.
        """
        layers.validate_images(images, self.num_channels, self.num_levels)
        # The labels are checked once, by `logits_from_inputs`.
        return self.logits_from_inputs(
            layers.preprocess_images(images, self.num_levels), labels=labels
        )

    @nn.compact
    def logits_from_inputs(
        self,
        inputs: jax.Array,
        conditioning: jax.Array | None = None,
        labels: jax.Array | None = None,
    ) -> jax.Array:
        """Logits from the float encoding of the images (`layers.preprocess_images`).

        Differentiable in `inputs`, which is what the causality tests use. `conditioning`,
        an optional `[batch, height, width, c]` map known in full (the multi-scale model's
        upsampled small image), is added by an unmasked 1x1 to every body unit's
        input-to-state map; None leaves the model and its parameters unchanged. `labels`
        (integer `[batch]`, class-conditional models only) add a learned per-class
        embedding to the same pre-activations of every unit, the same at every pixel.
        """
        chex.assert_rank(inputs, 4)
        layers.validate_labels(labels, inputs.shape[0], self.num_classes)
        labels_one_hot = layers.one_hot_labels(labels, self.num_classes)
        groups = self.num_channels
        k = self.first_kernel_size
        x = layers.MaskedConv2D(
            2 * self.hidden_dim, (k, k), "A", num_groups=groups, dtype=self.dtype, name=INPUT_CONV
        )(inputs)
        body = BODIES[self.name_in_registry]
        if self.schedule == "latency" and body.latency_stack and not self.is_initializing():
            # The units' parameters read by name from this model's tree (init creates them
            # through the units below: one parameter tree under every schedule).
            unit_outputs = body.latency_stack(
                self, self.variables["params"], x, conditioning, labels_one_hot
            )
        else:
            unit_outputs = []
            for index in range(self.num_layers):
                x = body.make_unit(self, index)(
                    x, inputs, conditioning=conditioning, labels_one_hot=labels_one_hot
                )
                unit_outputs.append(x)
        skips = [
            layers.masked_1x1(2 * self.hidden_dim, groups, skip_name(index), self.dtype)(output)
            for index, output in enumerate(unit_outputs)
            if self.use_skip
        ]
        features = layers.sum_features(skips) if self.use_skip else unit_outputs[-1]
        logits = layers.OutputStack(
            self.num_channels, self.num_levels, self.output_dim, self.dtype, name=OUTPUT_STACK
        )(features)
        return logits


def build_pixel_rnn(config: ml_collections.ConfigDict) -> PixelRNN:
    """Builds the PixelRNN whose body is `config.name` (a key of `BODIES`), checking fields."""
    if config.name not in BODIES:
        raise ValueError(f"Unknown model body {config.name!r}; choose one of {sorted(BODIES)}.")
    if config.num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {config.num_channels}.")
    if config.num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {config.num_levels}.")
    if config.full_context and config.name != "diagonal_bilstm":
        raise ValueError("full_context only applies to the 'diagonal_bilstm' model.")
    recurrence.parse_unroll(config.unroll)
    num_classes = config.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}."
        )
    dtype = layers.compute_dtype(config.dtype)
    schedule = recurrence.resolve_schedule(
        config.schedule, kind=config.name, hidden_dim=config.hidden_dim
    )
    if config.hidden_dim < config.num_channels or config.output_dim < config.num_channels:
        raise ValueError(
            f"hidden_dim ({config.hidden_dim}) and output_dim ({config.output_dim}) must be at "
            f"least num_channels ({config.num_channels}) so every colour group has features."
        )
    return PixelRNN(
        name_in_registry=config.name,
        num_layers=config.num_layers,
        hidden_dim=config.hidden_dim,
        num_levels=config.num_levels,
        num_channels=config.num_channels,
        unroll=config.unroll,
        full_context=config.full_context,
        first_kernel_size=config.first_kernel_size,
        recurrent_kernel_size=config.recurrent_kernel_size,
        output_dim=config.output_dim,
        use_residual=config.use_residual,
        use_skip=config.use_skip,
        num_classes=num_classes,
        dtype=dtype,
        remat=bool(config.remat),
        schedule=schedule,
    )


# ---------------------------------------------------------------------------------------
# The stack around the body, one pixel at a time (see `sampling.cached`).


def prepare_shell(model: PixelRNN, params: incremental.Params) -> incremental.Params:
    """The masked kernels of the input convolution, the skips and the output stack."""
    groups = model.num_channels
    skips = None
    if model.use_skip:
        skips = [
            incremental.masked_dense(params[skip_name(index)], groups)
            for index in range(model.num_layers)
        ]
    return {
        "input_kernel": incremental.causal_rows(params[INPUT_CONV]["kernel"], "A", groups),
        "input_bias": params[INPUT_CONV]["bias"],
        "skips": skips,
        "hidden": incremental.masked_dense(params[OUTPUT_STACK][layers.OUTPUT_HIDDEN], groups),
        "logits": incremental.masked_dense(params[OUTPUT_STACK][layers.OUTPUT_LOGITS], groups),
    }


def pixel_logits(model, shell, body_params, cache, window, column, conditioning):
    """Evaluates one pixel from the caches and its first-layer window of the image.

    Args:
      model: the PixelRNN.
      shell: from `prepare_shell`.
      body_params: from its body's `CachedBody.prepare`.
      cache: the body's caches.
      window: [batch, k//2 + 1, k, channels], the image in [-1, 1] around the pixel, as
        read by the first k x k convolution (positions it masks may hold anything finite).
      column: the pixel's column (traced int32).
      conditioning: the conditioning map's `[batch, c]` value at the pixel, or None.

    Returns:
      (column_state, logits [batch, channels] or [batch, channels, levels]).
    """
    body = BODIES[model.name_in_registry].cached
    x = incremental.window_conv(window, shell["input_kernel"]) + shell["input_bias"]
    column_state, outputs = body.pixel(model, body_params, cache, x, column, conditioning)
    if model.use_skip:
        features = layers.sum_features(
            [
                incremental.dense(skip, out)
                for skip, out in zip(shell["skips"], outputs, strict=True)
            ]
        )
    else:
        features = outputs[-1]
    hidden = incremental.dense(shell["hidden"], nn.relu(features))
    logits = incremental.dense(shell["logits"], nn.relu(hidden), out_dtype=jnp.float32)
    if model.num_levels != 2:
        logits = logits.reshape(window.shape[0], window.shape[-1], model.num_levels)
    return column_state, logits
