"""Tests of the offline out-of-distribution sets (pixel_rnn_jax.ood.sets)."""

import numpy as np
import pytest

from pixel_rnn_jax import ood
from pixel_rnn_jax.data import embedded


@pytest.fixture(scope="module")
def test_images():
    return np.random.default_rng(0).integers(0, 256, (7, 28, 28, 1)).astype(np.uint8)


def test_derived_sets_transform_the_test_images(test_images):
    inverted = ood.make_set("inverted", test_images, 256)
    np.testing.assert_array_equal(inverted.astype(int), 255 - test_images.astype(int))
    np.testing.assert_array_equal(ood.make_set("vflip", test_images, 256, 3), test_images[:3, ::-1])
    np.testing.assert_array_equal(ood.make_set("hflip", test_images, 256), test_images[:, :, ::-1])


def test_random_sets_have_their_level_structure(test_images):
    noise = ood.make_set("noise", test_images, 256, 50, seed=1)
    assert noise.shape == (50, 28, 28, 1) and noise.dtype == np.uint8
    assert len(np.unique(noise)) > 200
    constant = ood.make_set("constant", test_images, 256, 50, seed=1)
    assert all(len(np.unique(image)) == 1 for image in constant)
    assert len(np.unique(constant[:, 0, 0, 0])) > 30
    assert len(ood.make_set("noise", test_images, 256)) == ood.sets.RANDOM_SET_SIZE
    np.testing.assert_array_equal(noise, ood.make_set("noise", test_images, 256, 50, seed=1))


def test_mnist_is_every_embedded_digit(test_images):
    digits = ood.make_set("mnist", test_images, 256)
    arrays = embedded.mnist_arrays()
    assert len(digits) == len(arrays["train"][0]) + len(arrays["test"][0]) == 5000
    np.testing.assert_array_equal(digits[:10], arrays["train"][0][:10])
    with pytest.raises(ValueError, match="28x28x1 with 256 levels"):
        ood.make_set("mnist", test_images[:, :20], 256)


def test_unknown_sets_and_too_many_images_are_refused_with_what_there_is(test_images):
    with pytest.raises(ValueError, match="Unknown set 'svhn'.*mnist, noise"):
        ood.make_set("svhn", test_images, 256)
    with pytest.raises(ValueError, match="larger than set 'vflip', which has 7"):
        ood.make_set("vflip", test_images, 256, 8)
    with pytest.raises(ValueError, match="which has 5000"):
        ood.make_set("mnist", test_images, 256, 5001)
