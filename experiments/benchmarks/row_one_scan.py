"""A Row LSTM stack as ONE scan over rows, every layer of a row per step: the layout issue 15
asked to try against the library's one sweep per layer.

`one_scan_logits` computes the same function as a Row LSTM `PixelRNN` (same parameters,
same logits: a test checks it) but scans the image's rows once, carrying every layer's
hidden and cell state: step i runs, for each layer in turn, the 1 x k mask-B input-to-state
convolution of row i, the state-to-state product of row i - 1, the cell, the output 1x1
and the skip 1x1. It is differentiated by plain autodiff of the scan. The library instead
runs each layer's input-to-state product over the whole map at once, then one sweep of H
steps per layer with a hand-written backward (`nn.lstm_cell.lstm_sweep`).

`one_scan_variants` builds both as `ab.Variant`s timing value_and_grad of the mean NLL (the
train step's work less the optimiser) for `experiments.ab --row_one_scan`. Unconditional,
single-scale models only: it is a measurement, not a model kind.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import ab, scan
from pixel_rnn_jax import likelihood, models, parallel
from pixel_rnn_jax.models import pixel_rnn, residual, row_lstm
from pixel_rnn_jax.nn import layers
from pixel_rnn_jax.nn.lstm_cell import NUM_GATES, lstm_cell


def _masked(conv_params, mask_type: str, num_groups: int, num_gates: int = 1):
    """(masked kernel [kh, kw, in, out], the taps the mask keeps, bias) of a MaskedConv2D."""
    kernel, taps = layers.masked_kernel(conv_params["kernel"], mask_type, num_groups, num_gates)
    return kernel, taps, conv_params["bias"]


def _conv(x, conv_params, mask_type, num_groups, num_gates=1):
    kernel, taps, bias = _masked(conv_params, mask_type, num_groups, num_gates)
    return layers.conv_as_matmul(x, kernel, taps) + bias


def one_scan_logits(model: pixel_rnn.PixelRNN, params, images: jax.Array) -> jax.Array:
    """The logits of a Row LSTM `model` for integer `images` [batch, height, width, channels].

    Returns:
      What `model.apply({'params': params}, images)` returns.
    """
    if model.name_in_registry != row_lstm.KIND or model.num_classes or not model.use_skip:
        raise ValueError("one_scan_logits covers unconditional Row LSTMs with skips only.")
    groups, num_layers = model.num_channels, model.num_layers
    inputs = layers.preprocess_images(images, model.num_levels)
    x0 = _conv(inputs, params[pixel_rnn.INPUT_CONV], "A", groups)  # [B, H, W, 2h]
    units = residual.unit_params(params, row_lstm.KIND, num_layers)
    layer = [unit[residual.LAYER] for unit in units]
    input_k = [_masked(p[row_lstm.INPUT_TO_STATE], "B", groups, NUM_GATES) for p in layer]
    output_k = [_masked(unit[residual.OUTPUT], "B", groups) for unit in units]
    skip_k = [_masked(params[pixel_rnn.skip_name(i)], "B", groups) for i in range(num_layers)]

    def step(carry, x):  # x: [batch, width, 2h], row i of the input convolution's output
        hiddens, cells = carry
        new_hiddens, new_cells, skip_sum = [], [], 0.0
        for index in range(num_layers):
            kernel, taps, bias = input_k[index]
            gates = layers.conv_as_matmul(x[:, None], kernel, taps)[:, 0] + bias
            state_kernel = layer[index][row_lstm.STATE_TO_STATE]
            gates = gates + row_lstm.row_state_to_gates(state_kernel, hiddens[index])
            hidden, cell = lstm_cell(gates, cells[index])
            new_hiddens.append(hidden)
            new_cells.append(cell)
            out_kernel, _, out_bias = output_k[index]
            y = layers.matmul_2d(hidden, out_kernel[0, 0]) + out_bias
            x = x + y if model.use_residual else y
            skip_kernel, _, skip_bias = skip_k[index]
            skip_sum = skip_sum + layers.matmul_2d(x, skip_kernel[0, 0]) + skip_bias
        return (new_hiddens, new_cells), skip_sum

    batch, _, width, _ = x0.shape
    zeros = [jnp.zeros((batch, width, model.hidden_dim), jnp.float32)] * num_layers
    _, skips = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x0, 0, 1))
    features = jnp.swapaxes(skips, 0, 1)
    output = params[pixel_rnn.OUTPUT_STACK]
    hidden = jax.nn.relu(_conv(jax.nn.relu(features), output[layers.OUTPUT_HIDDEN], "B", groups))
    logits = _conv(hidden, output[layers.OUTPUT_LOGITS], "B", groups)
    if model.num_levels == 2:
        return logits
    return logits.reshape(*logits.shape[:-1], model.num_channels, model.num_levels)


def one_scan_variants(size: scan.SizeSpec, seed: int = 0) -> list[ab.Variant]:
    """[the library's value_and_grad, the one-scan layout's] of the mean NLL at `size`."""
    model = models.build_model(scan.model_config(row_lstm.KIND, size, 1))
    shape = (size.batch_size, size.image_size, size.image_size, size.num_channels)
    images = jnp.asarray(
        np.asarray(jax.random.randint(jax.random.PRNGKey(seed), shape, 0, size.num_levels)),
        jnp.int32,
    )
    params = model.init(jax.random.PRNGKey(seed + 1), images)["params"]

    def loss_of(logits_fn):
        def loss(p):
            return -jnp.mean(likelihood.log_likelihood(logits_fn(p), images, size.num_levels))

        return loss

    library = loss_of(lambda p: model.apply({"params": p}, images))
    one_scan = loss_of(lambda p: one_scan_logits(model, p, images))
    options = parallel.compiler_options(jax.default_backend())
    variants = []
    for name, loss in (("library (a sweep per layer)", library), ("one scan over rows", one_scan)):
        start = time.perf_counter()
        grad_fn = jax.jit(jax.value_and_grad(loss), compiler_options=options)
        compiled = grad_fn.lower(params).compile()
        compile_s = time.perf_counter() - start
        value, _ = compiled(params)
        variants.append(
            ab.Variant(
                name,
                lambda compiled=compiled: jax.block_until_ready(compiled(params)),
                compile_s,
                float(value),
            )
        )
    return variants
