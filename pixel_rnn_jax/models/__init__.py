"""The paper's models behind one registry: `build_model(config)`.

- `pixel_rnn`: the stack (mask-A input convolution, body units, skips, output stack).
- `row_lstm`, `diagonal_lstm`, `pixelcnn`: each body unit's Linen layer, its pure math and
  its cached one-pixel body for sampling, side by side.
- `residual`: the residual unit around the recurrent layers, the parameter names and
  `Body` (what a body kind provides); `registered_body` adds a kind for a with-block.
- `multiscale`: the Multi-Scale PixelRNN (two PixelRNNs and a conditioning network).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from pixel_rnn_jax.models import multiscale, pixel_rnn
from pixel_rnn_jax.models.multiscale import MultiScalePixelRNN
from pixel_rnn_jax.models.pixel_rnn import BODIES, Body, PixelRNN


def default_model_config() -> ml_collections.ConfigDict:
    """All model fields with their defaults (a small MNIST Row LSTM)."""
    config = ml_collections.ConfigDict()
    # One of MODEL_REGISTRY: 'row_lstm', 'diagonal_bilstm', 'pixelcnn' or 'multiscale'.
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
    # 0: unconditional p(x). > 0: class-conditional p(x | y), y in [0, num_classes): every
    # body unit adds a learned embedding of the label to its input-to-state pre-activations.
    config.num_classes = 0
    # Compute dtype of every convolution and matmul: 'float32' or 'bfloat16'. Parameters,
    # optimiser state, LSTM states, logits and the likelihood stay float32.
    config.dtype = "float32"
    config.remat = False  # recompute each body unit in the backward pass (less memory)
    # Recurrence layout: 'throughput' (one loop per layer: XLA:CPU's fastest), 'latency' (the
    # fewest sequential steps: every Row LSTM layer in one scan over rows, both Diagonal
    # BiLSTM directions in one loop) or 'auto' (per backend, kind and h: `resolve_schedule`).
    # The parameters do not depend on it.
    config.schedule = "auto"
    # Multi-Scale PixelRNN only (name 'multiscale'), ignored by the other models.
    config.multiscale = multiscale.default_multiscale_config()
    return config


# Model config -> Linen module, by `config.name`: one PixelRNN per body kind, and the
# multi-scale model made of two of them.
MODEL_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    **dict.fromkeys(BODIES, pixel_rnn.build_pixel_rnn),
    "multiscale": multiscale.build_multiscale,
}


@contextlib.contextmanager
def registered_body(name: str, body: Body) -> Iterator[None]:
    """Adds the body kind `name` (a PixelRNN of `body`'s units) for a with-block.

    Inside it, `build_model`, the samplers, the coder and the probes know the kind as they
    know the built-in ones; afterwards it is gone. How a new recurrent unit is tried without
    touching the library: tests/test_unit_extension.py registers a Row GRU this way.

    Raises:
      ValueError: `name` is already a model name.
    """
    if name in MODEL_REGISTRY or name in BODIES:
        raise ValueError(f"Model name {name!r} is taken; choose another.")
    BODIES[name] = body
    MODEL_REGISTRY[name] = pixel_rnn.build_pixel_rnn
    try:
        yield
    finally:
        del BODIES[name], MODEL_REGISTRY[name]


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the model named `config.name` with the fields of `default_model_config()`."""
    if config.name not in MODEL_REGISTRY:
        raise ValueError(
            f"Unknown model name {config.name!r}; choose one of {sorted(MODEL_REGISTRY)}."
        )
    return MODEL_REGISTRY[config.name](config)


def count_parameters(config: ml_collections.ConfigDict, height: int = 8, width: int = 8) -> int:
    """Number of parameters of `build_model(config)`; shapes only, nothing is computed.

    The count does not depend on the image size: every layer is convolutional or recurrent.
    """
    model = build_model(config)
    images = jax.ShapeDtypeStruct((1, height, width, config.num_channels), jax.numpy.int32)
    labels = jax.ShapeDtypeStruct((1,), jax.numpy.int32) if config.num_classes else None
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, labels)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


__all__ = [
    "BODIES",
    "Body",
    "MODEL_REGISTRY",
    "MultiScalePixelRNN",
    "PixelRNN",
    "build_model",
    "count_parameters",
    "default_model_config",
    "registered_body",
]
