"""Masked convolutions, the output stack, and image preprocessing/validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixel_rnn_jax.nn import layers, masks


@pytest.mark.parametrize("kernel_size,mask_type", [((3, 3), "A"), ((1, 3), "B"), ((1, 1), "B")])
def test_masked_conv_equals_a_direct_masked_correlation(kernel_size, mask_type):
    conv = layers.MaskedConv2D(6, kernel_size, mask_type, num_groups=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 5, 3))
    variables = conv.init(jax.random.PRNGKey(1), x)
    got = conv.apply(variables, x)
    kernel = np.asarray(variables["params"]["kernel"]) * masks.causal_mask(
        kernel_size, masks.feature_groups(3, 3), masks.feature_groups(6, 3), mask_type
    )
    kh, kw = kernel_size
    xp = np.pad(np.asarray(x), ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    want = np.zeros((1, 4, 5, 6))
    for i in range(4):
        for j in range(5):
            want[0, i, j] = np.einsum("hwi,hwio->o", xp[0, i : i + kh, j : j + kw], kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gate_layout_keeps_each_units_gates_in_its_group():
    conv = layers.MaskedConv2D(4 * 3, (1, 1), "B", num_groups=3, num_gates=4)
    x = jnp.zeros((1, 1, 1, 3))
    variables = conv.init(jax.random.PRNGKey(0), x)
    # Perturb the B input: only units of group B (index 2 of every gate block) may move.
    grad = jax.jacrev(lambda v: conv.apply(variables, v)[0, 0, 0])(x)[:, 0, 0, 0, 2]
    moved = np.abs(np.asarray(grad)) > 0
    assert moved.reshape(4, 3)[:, 2].all() and not moved.reshape(4, 3)[:, :2].any()


class OutputStackTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_colour_order(self):
        stack = layers.OutputStack(num_channels=3, num_levels=256, output_dim=6)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 9))
        variables = stack.init(jax.random.PRNGKey(1), x)
        logits = self.variant(stack.apply)(variables, x)
        chex.assert_shape(logits, (2, 3, 4, 3, 256))
        # R logits must not depend on G or B input features at the same pixel.
        jac = jax.jacrev(lambda v: stack.apply(variables, v)[0, 0, 0, 0].sum())(x)[0, 0, 0]
        groups = masks.feature_groups(9, 3)
        assert not np.asarray(jac)[groups > 0].any() and np.asarray(jac)[groups == 0].any()


def test_binary_output_stack_gives_one_logit_per_channel():
    stack = layers.OutputStack(num_channels=1, num_levels=2, output_dim=4)
    x = jnp.ones((2, 3, 3, 5))
    assert stack.apply(stack.init(jax.random.PRNGKey(0), x), x).shape == (2, 3, 3, 1)


def test_preprocess_maps_levels_to_minus_one_one():
    np.testing.assert_allclose(
        layers.preprocess_images(jnp.array([0, 255]), 256), [-1.0, 1.0], atol=1e-6
    )
    np.testing.assert_allclose(layers.preprocess_images(jnp.array([0, 1]), 2), [-1.0, 1.0])


def test_validation_checks_values_only_when_concrete():
    images = jnp.full((1, 2, 2, 1), 5, jnp.int32)
    with pytest.raises(ValueError, match="values in"):
        layers.validate_images(images, 1, 2)
    # Under jit the values are unknown; the shape check still runs.
    jax.jit(lambda x: layers.validate_images(x, 1, 2))(images)
    with pytest.raises(ValueError, match="channels"):
        jax.jit(lambda x: layers.validate_images(x, 3, 2))(images)
