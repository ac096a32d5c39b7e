"""Exact discrete likelihoods."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from pixel_rnn_jax import likelihood


def test_categorical_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 3, 5)).astype(np.float32) * 3
    images = rng.integers(0, 5, size=(2, 3, 4, 3))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_probs, images[..., None], -1)[..., 0].sum((1, 2, 3))
    got = likelihood.log_likelihood(jnp.asarray(logits), jnp.asarray(images), 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 5, 1)).astype(np.float32) * 4
    images = rng.integers(0, 2, size=(3, 4, 5, 1))
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = np.where(images == 1, np.log(p), np.log1p(-p)).sum((1, 2, 3))
    got = likelihood.log_likelihood(jnp.asarray(logits), jnp.asarray(images), 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("levels,bits", [(256, 8.0), (2, 1.0)])
def test_uniform_logits_give_log2_levels_bits_per_dim(levels, bits):
    shape = (4, 8, 8, 3)
    logits = jnp.zeros(shape if levels == 2 else (*shape, levels))
    images = jnp.asarray(np.random.default_rng(2).integers(0, levels, size=shape))
    nll = -likelihood.log_likelihood(logits, images, levels)
    np.testing.assert_allclose(likelihood.nll_bits_per_dim(nll, 8 * 8 * 3), bits, rtol=1e-6)


def test_extreme_logits_stay_finite():
    logits = jnp.array([1e4, -1e4, 1e4, -1e4]).reshape(1, 2, 2, 1)
    images = jnp.array([1, 0, 0, 1]).reshape(1, 2, 2, 1)
    ll = likelihood.log_likelihood(logits, images, 2)
    assert np.isfinite(ll).all()
    np.testing.assert_allclose(ll, [-2e4], rtol=1e-6)


def test_extreme_categorical_logits_stay_finite():
    logits = jnp.array([1e4, -1e4, 0.0]).reshape(1, 1, 1, 1, 3)
    ll = likelihood.log_likelihood(logits, jnp.array([1]).reshape(1, 1, 1, 1), 3)
    np.testing.assert_allclose(ll, [-2e4], rtol=1e-6)
    ll = likelihood.log_likelihood(logits, jnp.zeros((1, 1, 1, 1), jnp.int32), 3)
    np.testing.assert_allclose(ll, [0.0], atol=1e-6)


def test_bits_per_dim_conversion():
    assert likelihood.nll_bits_per_dim(math.log(2) * 10, 10) == pytest.approx(1.0)
