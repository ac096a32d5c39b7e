"""Tests of the out-of-distribution scores (pixel_rnn_jax.ood.scores) on a tiny model."""

import math

import jax
import numpy as np
import pytest

from pixel_rnn_jax import likelihood, models, ood


@pytest.fixture(scope="module")
def tiny():
    """A 1-block PixelCNN over 6x5 greyscale images with 256 levels, random parameters."""
    config = models.default_model_config()
    config.update(
        name="pixelcnn",
        num_layers=1,
        hidden_dim=4,
        output_dim=8,
        num_levels=256,
        first_kernel_size=3,
    )
    model = models.build_model(config)
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 5, 1))
    variables = model.init(jax.random.key(0), images)
    return model, variables, images


def test_pixel_bits_sum_to_the_likelihood_codes_nll_whatever_the_batching(tiny):
    model, variables, images = tiny
    bits = ood.pixel_bits(model, variables, images, batch_size=2)  # 2 + 2 + 1 padded
    assert bits.shape == images.shape and bits.dtype == np.float64
    log_p = likelihood.log_likelihood(model.apply(variables, images), images, 256)
    np.testing.assert_allclose(
        bits.sum(axis=(1, 2, 3)), -np.asarray(log_p) / math.log(2), rtol=1e-5
    )
    np.testing.assert_allclose(ood.pixel_bits(model, variables, images, batch_size=8), bits)
    np.testing.assert_allclose(ood.raw_score(bits), bits.sum(axis=(1, 2, 3)) / 30)


def test_a_ratio_of_a_model_to_itself_is_zero_and_to_another_is_not(tiny):
    model, variables, images = tiny
    bits = ood.pixel_bits(model, variables, images)
    np.testing.assert_array_equal(ood.likelihood_ratio_score(bits, bits), np.zeros(5))
    other = model.init(jax.random.key(1), images)
    ratio = ood.likelihood_ratio_score(bits, ood.pixel_bits(model, other, images))
    assert np.all(np.abs(ratio) > 1e-4)
    with pytest.raises(ValueError, match="Shapes differ"):
        ood.likelihood_ratio_score(bits, bits[:2])


def test_input_complexity_subtracts_exactly_the_codecs_bits():
    bits = np.full((3, 2, 2, 1), 2.0)  # 8 bits an image, 2 bits/dim
    codec_bits = np.array([0.0, 4.0, 16.0])
    np.testing.assert_allclose(ood.input_complexity_score(bits, codec_bits), [2.0, 1.0, -2.0])
    with pytest.raises(ValueError, match="codec_bits"):
        ood.input_complexity_score(bits, codec_bits[:2])


def test_typicality_threshold_is_the_bootstrap_quantile_and_batches_are_disjoint():
    rng = np.random.default_rng(0)
    train_raw, validation_raw = rng.normal(3.0, 0.2, 1000), rng.normal(3.0, 0.2, 500)
    test = ood.Typicality.fit(train_raw, validation_raw, 5, alpha=0.05, seed=0)
    assert test.train_mean == pytest.approx(train_raw.mean())
    # The mean of 5 draws has standard deviation 0.2 / sqrt(5); its 95% |distance| quantile
    # is about 1.96 of those.
    assert test.threshold == pytest.approx(1.96 * 0.2 / math.sqrt(5), rel=0.1)
    scores = test.batch_scores(np.array([3.0] * 5 + [4.0] * 5 + [9.0] * 2))
    np.testing.assert_allclose(scores, [abs(3.0 - test.train_mean), abs(4.0 - test.train_mean)])


def test_combined_score_sums_the_absolute_scores_standardised_on_the_reference():
    reference = {"a": np.array([0.0, 2.0]), "b": np.array([10.0, 30.0])}  # std 1 and 10
    scores = {"a": np.array([1.0, 3.0, -1.0]), "b": np.array([20.0, 40.0, 0.0])}
    # Both sides count: (0 + 0), (2 + 2), (2 + 2).
    np.testing.assert_allclose(ood.combined_score(scores, reference), [0.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="differ"):
        ood.combined_score({"a": scores["a"]}, reference)
    with pytest.raises(ValueError, match="constant"):
        ood.combined_score({"a": scores["a"]}, {"a": np.ones(3)})
