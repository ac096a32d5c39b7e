"""Colour-group masks A and B."""

import numpy as np
import pytest

from pixel_rnn_jax.nn import masks


def test_feature_groups_are_contiguous_and_channel_major():
    np.testing.assert_array_equal(masks.feature_groups(6, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(masks.feature_groups(3, 3), [0, 1, 2])
    np.testing.assert_array_equal(masks.feature_groups(4, 1), [0, 0, 0, 0])
    # Output logits are [channels, levels] flattened: feature c * L + l is channel c.
    groups = masks.feature_groups(3 * 256, 3)
    np.testing.assert_array_equal(groups.reshape(3, 256), np.repeat([[0], [1], [2]], 256, 1))


def test_gate_groups_split_units_before_gates():
    np.testing.assert_array_equal(
        masks.gate_feature_groups(3, 3, 4), [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    )


def test_too_few_features_for_the_colour_groups_is_an_error():
    with pytest.raises(ValueError, match="colour groups"):
        masks.feature_groups(2, 3)


@pytest.mark.parametrize("kernel_size", [(7, 7), (3, 3), (1, 3), (1, 1), (5, 2)])
def test_spatial_support_is_strictly_before_the_centre(kernel_size):
    kh, kw = kernel_size
    groups = masks.feature_groups(3, 3)
    mask = masks.causal_mask(kernel_size, groups, groups, "B")
    for r in range(kh):
        for c in range(kw):
            before = (r, c) < (kh // 2, kw // 2)
            after = (r, c) > (kh // 2, kw // 2)
            if before:
                assert mask[r, c].all()
            if after:
                assert not mask[r, c].any()


def test_centre_rules_for_mask_a_and_b():
    groups = masks.feature_groups(3, 3)  # R, G, B
    a = masks.causal_mask((3, 3), groups, groups, "A")[1, 1]
    b = masks.causal_mask((3, 3), groups, groups, "B")[1, 1]
    # [in, out]: R output sees nothing (A) or R (B); B output sees R, G (A) or R, G, B (B).
    np.testing.assert_array_equal(a, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [0, 1, 1], [0, 0, 1]])


def test_greyscale_mask_a_hides_the_centre_and_mask_b_shows_it():
    groups = masks.feature_groups(2, 1)
    assert not masks.causal_mask((7, 7), groups, groups, "A")[3, 3].any()
    assert masks.causal_mask((7, 7), groups, groups, "B")[3, 3].all()


def test_unknown_mask_type():
    with pytest.raises(ValueError, match="mask_type"):
        masks.causal_mask((3, 3), [0], [0], "C")
