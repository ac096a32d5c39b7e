"""experiments.benchmarks.row_one_scan: the one-scan Row LSTM computes the library's model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.benchmarks import row_one_scan, scan
from pixel_rnn_jax import likelihood, models


def _model_and_data(num_channels, num_levels, use_residual=True):
    fields = models.default_model_config().to_dict()
    fields.update(
        name="row_lstm",
        num_layers=3,
        hidden_dim=6,
        num_channels=num_channels,
        num_levels=num_levels,
        output_dim=6,
        use_residual=use_residual,
    )
    model = models.build_model(ml_collections.ConfigDict(fields))
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 5, 4, num_channels), 0, num_levels)
    params = model.init(jax.random.PRNGKey(1), images)["params"]
    return model, params, images


@pytest.mark.parametrize("num_channels, num_levels, use_residual", [(1, 2, True), (3, 256, False)])
def test_same_logits_and_gradients_as_the_library(num_channels, num_levels, use_residual):
    model, params, images = _model_and_data(num_channels, num_levels, use_residual)

    def loss_and_logits(logits_fn):
        def loss(p):
            logits = logits_fn(p)
            return -jnp.mean(likelihood.log_likelihood(logits, images, num_levels)), logits

        return jax.jit(jax.grad(loss, has_aux=True))

    grads, got = loss_and_logits(lambda p: row_one_scan.one_scan_logits(model, p, images))(params)
    want_grads, want = loss_and_logits(lambda p: model.apply({"params": p}, images))(params)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_other_kinds_are_refused():
    fields = models.default_model_config().to_dict()
    fields.update(name="pixelcnn", num_layers=2, hidden_dim=4)
    model = models.build_model(ml_collections.ConfigDict(fields))
    with pytest.raises(ValueError, match="unconditional Row LSTMs"):
        row_one_scan.one_scan_logits(model, {}, jnp.zeros((1, 4, 4, 1), jnp.int32))


def test_variants_time_the_same_loss():
    variants = row_one_scan.one_scan_variants(scan.SIZES[8])
    assert len(variants) == 2
    assert variants[0].first_loss == pytest.approx(variants[1].first_loss, rel=1e-5)
    for variant in variants:
        variant.call()
