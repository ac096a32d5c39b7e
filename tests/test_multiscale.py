"""Multi-Scale PixelRNN: causality given s, use of s, the joint likelihood, training, sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_probes import schedules_agree, tiny_model_config

from experiments import configs
from experiments.configs import base
from pixel_rnn_jax import likelihood, models, sampling, train
from pixel_rnn_jax.models import multiscale
from pixel_rnn_jax.nn import layers
from pixel_rnn_jax.sampling.multiscale import sample_multiscale

BODIES = ("row_lstm", "diagonal_bilstm", "pixelcnn")
HEIGHT, WIDTH, CHANNELS, LEVELS = 6, 4, 3, 256  # non-square RGB, every position probed


def tiny_multiscale_config(conditional_name="row_lstm", channels=CHANNELS, levels=LEVELS, **kw):
    config = tiny_model_config("multiscale", channels, levels, **kw)
    config.multiscale.conditional_name = conditional_name
    config.multiscale.cond_dim = 5
    config.multiscale.encoder_layers = 1
    config.multiscale.small.num_layers = 1
    config.multiscale.small.hidden_dim = 6
    return config


def _init(config, seed=0, shape=(1, HEIGHT, WIDTH, CHANNELS)):
    model = models.build_model(config)
    labels = jnp.zeros(shape[:1], jnp.int32) if config.num_classes else None
    return model, model.init(jax.random.PRNGKey(seed), jnp.zeros(shape, jnp.int32), labels)


def _dependencies(config, outputs_fn, num_probes=2):
    """bool [out, in] over raster-then-channel positions: the exact Jacobian's support.

    OR-ed over random parameters and inputs (as `model_probes.dependency_matrix`), with a
    random projection of the level logits so that every sub-pixel has one scalar output.
    """
    n = HEIGHT * WIDTH * CHANNELS
    model = models.build_model(config)

    @jax.jit  # compiled once for all probes
    def jacobian(variables, x, s, projection):
        def scalar_logits(x):
            return (outputs_fn(model, variables, x[None], s[None])[0] @ projection).reshape(-1)

        return jax.jacrev(scalar_logits)(x).reshape(n, n)

    found = np.zeros((n, n), dtype=bool)
    for probe in range(num_probes):
        _, variables = _init(config, seed=probe)
        key_x, key_s, key_p = jax.random.split(jax.random.PRNGKey(100 + probe), 3)
        projection = jax.random.normal(key_p, (LEVELS,))
        x = jax.random.uniform(key_x, (HEIGHT, WIDTH, CHANNELS), minval=-1.0, maxval=1.0)
        s = multiscale.subsample(jax.random.uniform(key_s, x[None].shape, minval=-1.0), 2)[0]
        found |= np.asarray(jnp.abs(jacobian(variables, x, s, projection)) > 0)
    return found


def _conditional(model, variables, x, s):
    return model.apply(variables, x, s, method=multiscale.MultiScalePixelRNN.conditional_logits)


@pytest.mark.parametrize("body", BODIES)
def test_conditional_network_is_causal_in_the_large_image_given_the_small_one(body):
    # s is a separate, fixed input: the conditional logits at p may use all of s but only
    # the positions of x strictly before p (raster-then-R,G,B order).
    deps = _dependencies(tiny_multiscale_config(body), _conditional)
    n = deps.shape[0]
    earlier = np.tril(np.ones((n, n), dtype=bool), k=-1)
    leaks = deps & ~earlier
    assert not leaks.any(), f"{body}: leaks at (output, input) {np.argwhere(leaks)[:5]}"
    assert deps.sum() > n  # the probe sees the context it must see


def test_joint_logits_are_autoregressive_in_the_multiscale_order():
    # With s = x[::2, ::2] taken from x itself, the joint logits at each position may depend
    # only on positions earlier in the order "all of s (raster), then the rest (raster)":
    # exactly the condition for log_likelihood(logits, x) to be a normalised joint.
    def joint(model, variables, x, s):
        del s
        return model.apply(variables, x, method=multiscale.MultiScalePixelRNN.logits_from_inputs)

    deps = _dependencies(tiny_multiscale_config("diagonal_bilstm"), joint)
    grid, rest = multiscale.split_positions(HEIGHT, WIDTH, CHANNELS, 2)
    rank = np.empty(deps.shape[0], dtype=int)
    rank[np.concatenate([grid, rest])] = np.arange(deps.shape[0])
    allowed = rank[None, :] < rank[:, None]  # [out, in]
    assert not (deps & ~allowed).any(), np.argwhere(deps & ~allowed)[:5]
    # Positions off the grid do see pixels of s later in raster order (via the conditioning).
    positions = np.arange(deps.shape[0])
    later_grid = (positions[None, :] > positions[:, None]) & np.isin(positions, grid)[None, :]
    assert (deps & later_grid).any()


@pytest.mark.parametrize("body", BODIES)
def test_conditional_network_uses_the_small_image(body):
    model, variables = _init(tiny_multiscale_config(body))
    key_x, key_a, key_b = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(key_x, (1, HEIGHT, WIDTH, CHANNELS), minval=-1.0)
    small_shape = (1, HEIGHT // 2, WIDTH // 2, CHANNELS)
    s_a = jax.random.uniform(key_a, small_shape, minval=-1.0)
    s_b = jax.random.uniform(key_b, small_shape, minval=-1.0)
    change = jnp.abs(
        _conditional(model, variables, x, s_a) - _conditional(model, variables, x, s_b)
    )
    # Every position's logits move, even (0, 0), which has no context in x at all.
    assert (change.max(axis=(0, 3, 4)) > 1e-6).all()
    # Every layer of the conditional network owns a conditioning 1x1; a plain PixelRNN none.
    names = [
        "/".join(k.key for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"]["conditional"])
    ]
    per_layer = 2 if body == "diagonal_bilstm" else 1  # one per direction
    assert sum("conditioning" in name for name in names) == 2 * per_layer  # 2 layers
    plain, plain_variables = _init(tiny_model_config(body, CHANNELS, LEVELS))
    assert "conditioning" not in str(jax.tree_util.tree_structure(plain_variables))


def test_joint_log_likelihood_equals_the_sum_of_its_parts_and_grid_logits_are_small_ones():
    model, variables = _init(tiny_multiscale_config())
    images = jax.random.randint(jax.random.PRNGKey(1), (3, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)

    @jax.jit
    def compute(variables, images):
        logits = model.apply(variables, images)
        small = model.small.apply(
            multiscale.small_variables(variables), multiscale.subsample(images, 2)
        )
        parts = likelihood.multiscale_log_likelihood_parts(model, variables, images)
        return logits, small, parts

    logits, small_logits, (small_ll, conditional_ll) = compute(variables, images)
    assert logits.shape == (3, HEIGHT, WIDTH, CHANNELS, LEVELS)
    joint = likelihood.log_likelihood(logits, images, LEVELS)  # the runner's formula
    np.testing.assert_allclose(joint, small_ll + conditional_ll, rtol=1e-5)
    np.testing.assert_allclose(logits[:, ::2, ::2], small_logits, rtol=1e-6, atol=1e-6)


def test_joint_distribution_is_normalised_over_every_image():
    # 3x3 binary images (s is 2x2): summing p(x) over all 512 images must give exactly 1.
    config = tiny_multiscale_config(channels=1, levels=2)
    model, variables = _init(config, shape=(1, 3, 3, 1))
    bits = np.array(list(itertools.product((0, 1), repeat=9)), np.int32)
    images = jnp.asarray(bits.reshape(-1, 3, 3, 1))
    log_p = likelihood.log_likelihood(jax.jit(model.apply)(variables, images), images, 2)
    np.testing.assert_allclose(jax.nn.logsumexp(log_p), 0.0, atol=1e-5)


def test_joint_loss_gradient_is_each_parts_own_gradient():
    # Why one run trains both parts exactly as two separate runs would (up to the optimiser's
    # global-norm clipping): the parts share no parameters, so each part's gradient of the
    # joint NLL is the gradient of its own term.
    model, variables = _init(tiny_multiscale_config())
    images = jax.random.randint(jax.random.PRNGKey(2), (2, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)

    def joint_nll(params):  # the runner's loss
        logits = model.apply({"params": params}, images)
        return -jnp.mean(likelihood.log_likelihood(logits, images, LEVELS))

    def parts_nll(params):  # [2]: each part's NLL computed by its own network alone
        parts = likelihood.multiscale_log_likelihood_parts(model, {"params": params}, images)
        return -jnp.stack([jnp.mean(parts[0]), jnp.mean(parts[1])])

    gradients = jax.jit(lambda p: (jax.grad(joint_nll)(p), jax.jacrev(parts_nll)(p)))
    joint, per_part = gradients(variables["params"])  # per_part leaves: [2, ...]
    small_only, conditional_only = (jax.tree.map(lambda g, i=i: g[i], per_part) for i in (0, 1))
    for own, other, keys in (
        (small_only, conditional_only, ("small",)),
        (conditional_only, small_only, ("conditional", "encoder")),
    ):
        for key in keys:
            for a, b in zip(jax.tree.leaves(joint[key]), jax.tree.leaves(own[key]), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
            assert not any(np.any(g) for g in jax.tree.leaves(other[key]))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(joint))


@pytest.fixture(scope="module")
def sampler_setup():
    model, variables = _init(tiny_multiscale_config())
    images = jax.random.randint(jax.random.PRNGKey(3), (2, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)
    return model, variables, images


def test_completion_keeps_the_given_rows_and_samples_the_small_image_first(sampler_setup):
    model, variables, images = sampler_setup
    rng = jax.random.PRNGKey(4)
    start = 3 * WIDTH * CHANNELS  # the top 3 rows are given: s's top 2 rows too
    out = sample_multiscale(model, variables, rng, images, start=start, method="naive")
    assert out.shape == images.shape and out.dtype == jnp.int32
    np.testing.assert_array_equal(out[:, :3], images[:, :3])
    assert (out[:, 3:] != images[:, 3:]).any()
    # The grid is exactly the small model's own completion of s with the first key.
    small_rng, _ = jax.random.split(rng)
    small_start = 2 * (WIDTH // 2) * CHANNELS
    expected_s = sampling.sample(
        model.small,
        multiscale.small_variables(variables),
        small_rng,
        multiscale.subsample(images, 2),
        start=small_start,
        method="naive",
    )
    np.testing.assert_array_equal(out[:, ::2, ::2], expected_s)
    # sampling.sample dispatches to the multi-scale sampler.
    dispatched = sampling.sample(model, variables, rng, images, start=start, method="naive")
    np.testing.assert_array_equal(dispatched, out)


@pytest.mark.parametrize("conditional_name", ["row_lstm", "diagonal_bilstm", "pixelcnn"])
def test_cached_and_naive_sampling_draw_the_same_images(conditional_name):
    # The cached sampler walks the conditional network with the conditioning map; with the
    # same keys it must draw exactly what one conditional forward pass per position draws.
    model, variables = _init(tiny_multiscale_config(conditional_name))
    images = jax.random.randint(jax.random.PRNGKey(8), (2, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)
    rng = jax.random.PRNGKey(9)
    for start in (0, 3 * WIDTH * CHANNELS + 1):
        cached = sample_multiscale(model, variables, rng, images, start=start, method="cached")
        naive = sample_multiscale(model, variables, rng, images, start=start, method="naive")
        np.testing.assert_array_equal(cached, naive, err_msg=f"start={start}")
        flat = np.asarray(cached).reshape(2, -1)
        np.testing.assert_array_equal(flat[:, :start], np.asarray(images).reshape(2, -1)[:, :start])


def test_greedy_samples_are_the_argmax_of_each_parts_logits(sampler_setup):
    # At a vanishing temperature every draw is its logits' argmax: recomputing each part's
    # logits on the finished image (causality makes them the logits the sampler saw) checks
    # the order, s first and then the rest given the whole of s.
    model, variables, images = sampler_setup
    out = sample_multiscale(model, variables, jax.random.PRNGKey(5), images, temperature=1e-6)
    inputs = layers.preprocess_images(out, LEVELS)
    small_inputs = multiscale.subsample(inputs, 2)
    conditional = _conditional(model, variables, inputs, small_inputs)
    small = model.apply(
        variables, multiscale.subsample(out, 2), method=multiscale.MultiScalePixelRNN.small_logits
    )
    logits = multiscale.merge_logits(small, conditional, 2)
    chosen = jnp.take_along_axis(logits, out[..., None], axis=-1)[..., 0]
    assert (chosen >= logits.max(axis=-1) - 1e-4).all()


def test_multiscale_configs_build_and_the_runner_trains_the_smoke_one(tmp_path):
    # Every base config carries the model.multiscale fields of the model contract.
    assert (
        base.get_config().model.multiscale.keys() == multiscale.default_multiscale_config().keys()
    )
    paper = configs.get_config("multiscale_imagenet64")
    assert paper.data.name == "downsampled_imagenet/64x64"
    assert isinstance(models.build_model(paper.model), multiscale.MultiScalePixelRNN)
    config = configs.get_config("multiscale_imagenet64_smoke")
    assert config.data.name == "embedded_rgb64"
    config.train.num_steps = 2
    config.train.num_samples = 0  # sampling is tested above on small images
    config.train.eval_max_batches = 1
    config.train.eval_every = 2
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["step"] == 2
    assert 6.0 < result["eval/bits_per_dim"] < 10.0  # untrained: about uniform (8 bits/dim)


@pytest.mark.parametrize(
    "overrides,message",
    (
        ({"factor": 1}, "factor"),
        ({"conditional_name": "pixel_lstm"}, "Unknown model name"),
        ({"cond_dim": 0}, "cond_dim"),
    ),
)
def test_bad_multiscale_configs_are_rejected(overrides, message):
    config = tiny_multiscale_config()
    config.multiscale.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build_model(config)
    config = tiny_multiscale_config(full_context=True)
    with pytest.raises(ValueError, match="full_context"):
        models.build_model(config)


# ---------------------------------------------------------------------------------------
# Class-conditional multi-scale model: p(x | y) = p_small(s | y) p_cond(rest | s, y).


def test_conditional_joint_logits_are_autoregressive_given_the_label():
    def joint(model, variables, x, s):
        del s
        labels = jnp.ones((x.shape[0],), jnp.int32)
        return model.apply(
            variables, x, labels, method=multiscale.MultiScalePixelRNN.logits_from_inputs
        )

    config = tiny_multiscale_config("diagonal_bilstm", num_classes=2)
    deps = _dependencies(config, joint)
    grid, rest = multiscale.split_positions(HEIGHT, WIDTH, CHANNELS, 2)
    rank = np.empty(deps.shape[0], dtype=int)
    rank[np.concatenate([grid, rest])] = np.arange(deps.shape[0])
    assert not (deps & ~(rank[None, :] < rank[:, None])).any()
    assert deps.sum() > deps.shape[0]


def test_conditional_joint_is_normalised_for_each_label_and_uses_it():
    config = tiny_multiscale_config(channels=1, levels=2, num_classes=2)
    model, variables = _init(config, shape=(1, 3, 3, 1))
    bits = np.array(list(itertools.product((0, 1), repeat=9)), np.int32)
    images = jnp.asarray(bits.reshape(-1, 3, 3, 1))
    apply = jax.jit(model.apply)
    log_p = [
        likelihood.log_likelihood(apply(variables, images, jnp.full((512,), y)), images, 2)
        for y in (0, 1)
    ]
    for y in (0, 1):
        np.testing.assert_allclose(jax.nn.logsumexp(log_p[y]), 0.0, atol=1e-5)
    assert np.abs(np.asarray(log_p[0] - log_p[1])).max() > 1e-3
    # Both parts see the label: the sum of the parts is the joint, for each image's own label.
    labels = jnp.asarray(np.arange(512) % 2, jnp.int32)
    small_ll, conditional_ll = likelihood.multiscale_log_likelihood_parts(
        model, variables, images, labels
    )
    mixed = jnp.where(labels == 0, log_p[0], log_p[1])
    np.testing.assert_allclose(small_ll + conditional_ll, mixed, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        model.apply(variables, images)


def test_conditional_cached_and_naive_sampling_draw_the_same_images():
    model, variables = _init(tiny_multiscale_config("diagonal_bilstm", num_classes=2))
    images = jax.random.randint(jax.random.PRNGKey(8), (2, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)
    rng, labels = jax.random.PRNGKey(10), jnp.array([1, 0])
    for start in (0, 2 * WIDTH * CHANNELS):
        kwargs = {"start": start, "labels": labels}
        cached = sampling.sample(model, variables, rng, images, method="cached", **kwargs)
        naive = sampling.sample(model, variables, rng, images, method="naive", **kwargs)
        np.testing.assert_array_equal(cached, naive, err_msg=f"start={start}")
    with pytest.raises(ValueError, match="class-conditional"):
        sampling.sample(model, variables, rng, images)


@pytest.mark.parametrize(
    "conditional_name,small_name",
    [("row_lstm", "diagonal_bilstm"), ("diagonal_bilstm", "row_lstm")],
)
def test_latency_schedule_equals_throughput_in_logits_and_gradients(conditional_name, small_name):
    # Both parts under each schedule: the conditioning map and the labels enter the
    # recurrences of the conditional network, the small one sees neither.
    config = tiny_multiscale_config(conditional_name, hidden_dim=4, num_classes=2)
    config.multiscale.small.name = small_name
    config.first_kernel_size = 3
    images = jax.random.randint(jax.random.PRNGKey(0), (2, HEIGHT, WIDTH, CHANNELS), 0, LEVELS)
    schedules_agree(config, images, jnp.array([0, 1]))
