"""`build_model(config)`: the PixelRNN family behind one registry.

Every model is the paper's Table 1 stack: a 7x7 mask-A convolution to 2h features, a body
of `num_layers` residual units (Row LSTM, Diagonal BiLSTM or PixelCNN blocks), optional
learnable skip connections from every unit to the output, and the output stack.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import ml_collections
import numpy as np
from flax import linen as nn

from pixel_rnn_jax import layers, recurrence
from pixel_rnn_jax.diagonal_lstm import DiagonalBiLSTMLayer
from pixel_rnn_jax.pixelcnn import PixelCNNBlock
from pixel_rnn_jax.row_lstm import RowLSTMLayer


def default_model_config() -> ml_collections.ConfigDict:
    """All model fields with their defaults (a small MNIST Row LSTM)."""
    config = ml_collections.ConfigDict()
    # One of MODEL_REGISTRY ('row_lstm', 'diagonal_bilstm', 'pixelcnn') or COMPOSITE_MODELS.
    config.name = "row_lstm"
    config.num_layers = 7  # recurrent layers, or residual blocks for PixelCNN
    config.hidden_dim = 16  # h: LSTM units; residual streams carry 2h features
    config.num_levels = 2  # 2: Bernoulli per sub-pixel (binarized); 256: 8-bit softmax
    config.num_channels = 1  # 1 (greyscale) or 3 (RGB, with the R->G->B masks)
    # lax.scan unroll factor (int), 'full', or 'python' (plain loop); typed `object` so that
    # both `--config.model.unroll=4` and `--config.model.unroll=python` override it.
    config.unroll = ml_collections.FieldReference(1, field_type=object)
    config.full_context = False  # Diagonal BiLSTM: close the previous-row-last-pixel gap
    config.first_kernel_size = 7  # the mask-A input convolution is k x k
    config.recurrent_kernel_size = 3  # Row LSTM: k of the k x 1 convolutions (PixelCNN: k x k)
    config.output_dim = 32  # hidden features of the output stack
    config.use_residual = True  # residual connection around every body unit
    config.use_skip = True  # learnable 1x1 skip connections from every unit to the output
    from pixel_rnn_jax import multiscale  # noqa: PLC0415 - multiscale builds on this module

    # Multi-Scale PixelRNN only (name 'multiscale'), ignored by the other models.
    config.multiscale = multiscale.default_multiscale_config()
    return config


class ResidualRecurrentUnit(nn.Module):
    """2h input -> LSTM layer (h) -> mask-B 1x1 back to 2h -> plus the input."""

    layer: nn.Module  # maps [B, H, W, 2h] (and the context image) to [B, H, W, h]
    num_groups: int  # colour groups (3 for RGB)
    use_residual: bool = True  # add the unit input to its output

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
    ) -> jax.Array:
        y = self.layer(x, context, conditioning=conditioning)
        y = layers.masked_1x1(x.shape[-1], self.num_groups, name="output")(y)
        return x + y if self.use_residual else y


# The recurrent layers are built with `parent=None` so that the residual unit they are
# passed to adopts them as its child `layer` (`row_lstm_0/layer/...` in the parameter tree);
# built in PixelRNN's scope they would sit at the top level instead.


def _row_lstm_unit(model: PixelRNN, index: int) -> nn.Module:
    layer = RowLSTMLayer(
        model.hidden_dim,
        num_groups=model.num_channels,
        kernel_width=model.recurrent_kernel_size,
        unroll=model.unroll,
        parent=None,
    )
    return ResidualRecurrentUnit(
        layer, model.num_channels, model.use_residual, name=f"row_lstm_{index}"
    )


def _diagonal_bilstm_unit(model: PixelRNN, index: int) -> nn.Module:
    layer = DiagonalBiLSTMLayer(
        model.hidden_dim,
        num_groups=model.num_channels,
        unroll=model.unroll,
        full_context=model.full_context,
        parent=None,
    )
    return ResidualRecurrentUnit(
        layer, model.num_channels, model.use_residual, name=f"diagonal_bilstm_{index}"
    )


def _pixelcnn_unit(model: PixelRNN, index: int) -> nn.Module:
    return PixelCNNBlock(
        model.hidden_dim,
        num_groups=model.num_channels,
        kernel_size=model.recurrent_kernel_size,
        use_residual=model.use_residual,
        name=f"pixelcnn_{index}",
    )


# Body unit constructors by model name: (model, layer index) -> module [B,H,W,2h] -> same.
MODEL_REGISTRY: dict[str, Callable[[PixelRNN, int], nn.Module]] = {
    "row_lstm": _row_lstm_unit,
    "diagonal_bilstm": _diagonal_bilstm_unit,
    "pixelcnn": _pixelcnn_unit,
}


class PixelRNN(nn.Module):
    """An autoregressive image model over integer images `[batch, height, width, channels]`."""

    name_in_registry: str  # key of MODEL_REGISTRY
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

    def __call__(self, images: jax.Array) -> jax.Array:
        """Logits for integer `images` [batch, height, width, channels] in [0, num_levels).

        Returns:
          [batch, height, width, channels] Bernoulli logits when `num_levels == 2`, else
          [batch, height, width, channels, num_levels] categorical logits.
        """
        layers.validate_images(images, self.num_channels, self.num_levels)
        return self.logits_from_inputs(layers.preprocess_images(images, self.num_levels))

    @nn.compact
    def logits_from_inputs(
        self, inputs: jax.Array, conditioning: jax.Array | None = None
    ) -> jax.Array:
        """Logits from the float encoding of the images (`layers.preprocess_images`).

        Differentiable in `inputs`, which is what the causality tests use. `conditioning`,
        an optional `[batch, height, width, c]` map known in full (the multi-scale model's
        upsampled small image), is added by an unmasked 1x1 to every body unit's
        input-to-state map; None leaves the model and its parameters unchanged.
        """
        chex.assert_rank(inputs, 4)
        groups = self.num_channels
        k = self.first_kernel_size
        x = layers.MaskedConv2D(
            2 * self.hidden_dim, (k, k), "A", num_groups=groups, name="input_conv"
        )(inputs)
        make_unit = MODEL_REGISTRY[self.name_in_registry]
        skips = []
        for index in range(self.num_layers):
            x = make_unit(self, index)(x, inputs, conditioning=conditioning)
            if self.use_skip:
                skips.append(
                    layers.masked_1x1(2 * self.hidden_dim, groups, name=f"skip_{index}")(x)
                )
        features = layers.sum_features(skips) if self.use_skip else x
        logits = layers.OutputStack(
            self.num_channels, self.num_levels, self.output_dim, name="output_stack"
        )(features)
        return logits


def _build_multiscale(config: ml_collections.ConfigDict) -> nn.Module:
    from pixel_rnn_jax import multiscale  # noqa: PLC0415 - multiscale builds on this module

    return multiscale.build_multiscale(config)


# Models made of PixelRNNs rather than of body units: model config -> Linen module.
COMPOSITE_MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "multiscale": _build_multiscale,
}


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the model named `config.name` with the fields of `default_model_config()`."""
    if config.name in COMPOSITE_MODELS:
        return COMPOSITE_MODELS[config.name](config)
    if config.name not in MODEL_REGISTRY:
        raise ValueError(
            f"Unknown model name {config.name!r}; choose one of "
            f"{sorted(MODEL_REGISTRY) + sorted(COMPOSITE_MODELS)}."
        )
    if config.num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {config.num_channels}.")
    if config.num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {config.num_levels}.")
    if config.full_context and config.name != "diagonal_bilstm":
        raise ValueError("full_context only applies to the 'diagonal_bilstm' model.")
    recurrence.parse_unroll(config.unroll)
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
    )


def count_parameters(config: ml_collections.ConfigDict, height: int = 8, width: int = 8) -> int:
    """Number of parameters of `build_model(config)`; shapes only, nothing is computed.

    The count does not depend on the image size: every layer is convolutional or recurrent.
    """
    model = build_model(config)
    images = jax.ShapeDtypeStruct((1, height, width, config.num_channels), jax.numpy.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
