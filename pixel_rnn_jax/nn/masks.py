"""Causal kernel masks with the paper's R, G, B feature groups.

Every masked layer splits its input and output features into `num_groups` contiguous groups
(3 for RGB, 1 for greyscale). A kernel position strictly before the centre in raster order
is visible to every (input group, output group) pair. At the centre, mask 'A' lets an output
group see only strictly earlier input groups, and mask 'B' also lets it see its own group.
Positions after the centre are never visible. All functions here are pure numpy.
"""

from __future__ import annotations

import numpy as np

MASK_TYPES = ("A", "B")


def feature_groups(num_features: int, num_groups: int) -> np.ndarray:
    """Colour group of each feature: contiguous blocks of (nearly) equal size.

    Args:
      num_features: number of features F; must be at least `num_groups` so that every group
        owns a feature.
      num_groups: G, 3 for RGB models and 1 for greyscale ones.

    Returns:
      int array [F] with values in [0, G), non-decreasing. With F = C * L laid out
      channel-major (as the output logits are), feature c * L + l belongs to group c.
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    if num_features < num_groups:
        raise ValueError(
            f"{num_features} features cannot be split into {num_groups} colour groups; "
            f"use at least {num_groups} features."
        )
    return (np.arange(num_features) * num_groups) // num_features


def gate_feature_groups(hidden_dim: int, num_groups: int, num_gates: int) -> np.ndarray:
    """Groups of gate pre-activations laid out gate-major, `[num_gates, hidden_dim]` flat.

    The colour split is applied to the hidden units first and then repeated for every gate,
    so that gates o, f, i, g of hidden unit u all belong to u's group. Splitting the 4h
    features group-by-group instead would let the R unit's gates see G inputs (a leak that
    other implementations had).
    """
    return np.tile(feature_groups(hidden_dim, num_groups), num_gates)


def causal_mask(
    kernel_size: tuple[int, int],
    in_groups: np.ndarray,
    out_groups: np.ndarray,
    mask_type: str,
) -> np.ndarray:
    """Builds a 0/1 mask for a `[kh, kw, in_features, out_features]` convolution kernel.

    The kernel centre is at `(kh // 2, kw // 2)`; kernels are applied with that centre on the
    output pixel (SAME-style padding).

    Args:
      kernel_size: (kh, kw).
      in_groups: int [in_features], colour group of each input feature.
      out_groups: int [out_features], colour group of each output feature.
      mask_type: 'A' (centre: strictly earlier groups) or 'B' (centre: earlier groups and
        the same group).

    Returns:
      float32 array [kh, kw, in_features, out_features].
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    kh, kw = kernel_size
    in_groups = np.asarray(in_groups)
    out_groups = np.asarray(out_groups)
    mask = np.zeros((kh, kw, in_groups.size, out_groups.size), dtype=np.float32)
    ch, cw = kh // 2, kw // 2
    mask[:ch] = 1.0  # rows above the centre
    mask[ch, :cw] = 1.0  # left of the centre on the centre row
    if mask_type == "A":
        centre = in_groups[:, None] < out_groups[None, :]
    else:
        centre = in_groups[:, None] <= out_groups[None, :]
    mask[ch, cw] = centre.astype(np.float32)
    return mask


def kernel_mask(
    kernel_shape: tuple[int, int, int, int],
    mask_type: str,
    num_groups: int,
    num_gates: int = 1,
) -> np.ndarray:
    """The mask of a `[kh, kw, in_features, out_features]` kernel, from its shape alone.

    Input features are split with `feature_groups`; output features with
    `gate_feature_groups` when they are `num_gates` gate-major blocks (LSTM pre-activations).
    `layers.MaskedConv2D` and the incremental samplers both mask their kernels with this, so
    that a kernel read back from the parameters is masked exactly as the layer masks it.

    Args:
      kernel_shape: (kh, kw, in_features, out_features).
      mask_type: 'A' or 'B' (see `causal_mask`).
      num_groups: colour groups, 3 for RGB and 1 for greyscale.
      num_gates: gate blocks in the output features (4 for LSTM gates, else 1).

    Returns:
      float32 array of `kernel_shape`.
    """
    kh, kw, in_features, out_features = kernel_shape
    in_groups = feature_groups(in_features, num_groups)
    out_groups = gate_feature_groups(out_features // num_gates, num_groups, num_gates)
    return causal_mask((kh, kw), in_groups, out_groups, mask_type)
