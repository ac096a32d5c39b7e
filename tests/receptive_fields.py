"""Reference receptive fields of the three architectures, derived from the paper's wiring.

Computed by propagating pixel-dependency sets through the layers with plain numpy, with no
code shared with the models, so that the models' Jacobians can be checked against them.
`deps[i, j]` is a boolean [height, width] map of the image pixels that the features at
(i, j) depend on (greyscale, so channels play no role).
"""

from __future__ import annotations

import numpy as np


def _first_layer(height: int, width: int, kernel_size: int) -> np.ndarray:
    half = kernel_size // 2
    deps = np.zeros((height, width, height, width), dtype=bool)
    for i in range(height):
        for j in range(width):
            deps[i, j, max(i - half, 0) : i, max(j - half, 0) : j + half + 1] = True
            deps[i, j, i, max(j - half, 0) : j] = True
    return deps


def _row_lstm_layer(inputs: np.ndarray, kernel_width: int) -> np.ndarray:
    height, width = inputs.shape[:2]
    half = kernel_width // 2
    hidden = np.zeros_like(inputs)
    for i in range(height):
        for j in range(width):
            # Input-to-state: mask-B 1 x k along the row sees the left half and the centre.
            dep = inputs[i, max(j - half, 0) : j + 1].any(axis=0)
            if i > 0:  # state-to-state: previous row, columns j - k//2 .. j + k//2
                dep = dep | hidden[i - 1, max(j - half, 0) : j + half + 1].any(axis=0)
            hidden[i, j] = dep
    return inputs | hidden


def _diagonal_sweep(inputs: np.ndarray) -> np.ndarray:
    """Left-to-right Diagonal LSTM: state (i, j) reads (i, j - 1) and (i - 1, j)."""
    height, width = inputs.shape[:2]
    hidden = np.zeros_like(inputs)
    for i in range(height):
        for j in range(width):
            dep = inputs[i, j].copy()
            if j > 0:
                dep |= hidden[i, j - 1]
            if i > 0:
                dep |= hidden[i - 1, j]
            hidden[i, j] = dep
    return hidden


def _diagonal_bilstm_layer(inputs: np.ndarray, full_context: bool) -> np.ndarray:
    height, width = inputs.shape[:2]
    left = _diagonal_sweep(inputs)
    right_inputs = inputs.copy()
    if full_context:  # the right-to-left direction also reads the pixel itself
        for i in range(height):
            for j in range(width):
                right_inputs[i, j, i, j] = True
    right = _diagonal_sweep(right_inputs[:, ::-1])[:, ::-1]
    shifted = np.zeros_like(right)
    shifted[1:] = right[:-1]
    return inputs | left | shifted


def _pixelcnn_block(inputs: np.ndarray, kernel_size: int) -> np.ndarray:
    height, width = inputs.shape[:2]
    half = kernel_size // 2
    out = inputs.copy()
    for i in range(height):
        for j in range(width):
            out[i, j] |= inputs[max(i - half, 0) : i, max(j - half, 0) : j + half + 1].any(
                axis=(0, 1)
            )
            out[i, j] |= inputs[i, max(j - half, 0) : j].any(axis=0)
    return out


def expected_dependencies(
    name: str,
    height: int,
    width: int,
    num_layers: int,
    first_kernel_size: int = 7,
    recurrent_kernel_size: int = 3,
    full_context: bool = False,
) -> np.ndarray:
    """bool [height, width, height, width]: output (i, j) depends on pixel (r, c)."""
    deps = _first_layer(height, width, first_kernel_size)
    for _ in range(num_layers):
        if name == "row_lstm":
            deps = _row_lstm_layer(deps, recurrent_kernel_size)
        elif name == "diagonal_bilstm":
            deps = _diagonal_bilstm_layer(deps, full_context)
        elif name == "pixelcnn":
            deps = _pixelcnn_block(deps, recurrent_kernel_size)
        else:
            raise ValueError(name)
    return deps
