"""The PixelCNN residual block."""

import jax
import numpy as np

from pixel_rnn_jax.models.pixelcnn import PixelCNNBlock


def test_block_keeps_shape_and_adds_its_input():
    block = PixelCNNBlock(hidden_dim=3, num_groups=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 6))
    variables = block.init(jax.random.PRNGKey(1), x)
    out = block.apply(variables, x)
    assert out.shape == x.shape
    plain = PixelCNNBlock(hidden_dim=3, num_groups=3, use_residual=False)
    np.testing.assert_allclose(out - plain.apply(variables, x), x, rtol=1e-5, atol=1e-6)
    conv = variables["params"]["conv"]["kernel"]
    assert conv.shape == (3, 3, 3, 3)  # 2h -> h -> 3x3 -> h -> 2h


def test_block_reads_only_the_mask_b_neighbourhood():
    block = PixelCNNBlock(hidden_dim=4, num_groups=1)
    support = np.zeros((5, 5), bool)
    for seed in range(4):  # OR over random points: a dead ReLU can hide a path at one point
        x = jax.random.normal(jax.random.PRNGKey(seed), (1, 5, 5, 8))
        variables = block.init(jax.random.PRNGKey(seed + 10), x)
        jac = jax.jacrev(lambda v, variables=variables: block.apply(variables, v)[0, 2, 2].sum())(x)
        support |= np.abs(np.asarray(jac[0])).sum(-1) > 0
    expected = np.zeros((5, 5), bool)
    expected[1, 1:4] = True  # row above: three columns
    expected[2, 1:3] = True  # left neighbour and the centre (mask B)
    np.testing.assert_array_equal(support, expected)
