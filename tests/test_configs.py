"""Named configs: resolution, locking, documentation, and one tiny train step for each."""

import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags

from experiments import configs
from pixel_rnn_jax import models, parallel, train

MAIN_CONFIGS = [
    "row_lstm_mnist",
    "diagonal_bilstm_mnist",
    "pixelcnn_mnist",
    "row_lstm_cifar10",
    "diagonal_bilstm_cifar10",
    "pixelcnn_cifar10",
    "row_lstm_imagenet32",
    "diagonal_bilstm_imagenet32",
    "row_lstm_mnist_conditional",
    "diagonal_bilstm_mnist_conditional",
    "row_lstm_fashion_mnist",
    "diagonal_bilstm_fashion_mnist",
    "pixelcnn_fashion_mnist",
    "row_lstm_fashion_mnist_conditional",
]
REQUIRED_FIELDS = [
    "seed",
    "data.name",
    "data.data_dir",
    "data.strict",
    "train.batch_size",
    "train.num_steps",
    "train.learning_rate",
    "train.grad_clip_norm",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.num_samples",
]


def _get(config, dotted):
    for key in dotted.split("."):
        config = config[key]
    return config


def test_every_issue_config_exists_with_a_smoke_variant():
    names = configs.list_configs()
    for name in MAIN_CONFIGS:
        assert name in names
        assert f"{name}_smoke" in names
    assert "base" not in names


@pytest.mark.parametrize("name", configs.list_configs())
def test_config_is_locked_complete_and_documented(name):
    config = configs.get_config(name)
    for field in REQUIRED_FIELDS:
        _get(config, field)  # raises KeyError/AttributeError if missing
    # Exactly the model contract's fields, so build_model sees nothing unknown or missing.
    assert set(config.model.keys()) == set(models.default_model_config().keys())
    with pytest.raises(AttributeError, match="batch_size"):
        config.train.batch_sise = 8  # locked: a typo is an error that suggests the field
    source = (configs.CONFIG_DIR / f"{name}.py").read_text()
    assert f"python -m experiments.train --config={name}" in source
    assert "Paper" in source
    if not name.endswith("_smoke"):
        assert config.paper_result


def test_paper_sizes():
    mnist = configs.get_config("diagonal_bilstm_mnist")
    assert (mnist.model.num_layers, mnist.model.hidden_dim, mnist.train.batch_size) == (7, 16, 16)
    assert mnist.data.name == "binarized_mnist"
    assert mnist.train.optimizer == "rmsprop"
    cifar = configs.get_config("row_lstm_cifar10")
    assert (cifar.model.num_layers, cifar.model.hidden_dim, cifar.train.batch_size) == (12, 128, 16)
    assert (cifar.model.num_levels, cifar.model.num_channels) == (256, 3)
    assert configs.get_config("pixelcnn_cifar10").model.num_layers == 15


def test_fashion_mnist_configs_share_data_head_and_length():
    names = ["row_lstm", "diagonal_bilstm", "pixelcnn"]
    runs = [configs.get_config(f"{name}_fashion_mnist") for name in names]
    for name, config in zip(names, runs, strict=True):
        assert config.model.name == name
        assert config.data.name == "fashion_mnist"
        assert (config.model.num_levels, config.model.num_channels) == (256, 1)
        assert config.model.hidden_dim == 32 and config.model.num_classes == 0
    # One training length and batch: the three compare at equal steps.
    assert len({(c.train.num_steps, c.train.batch_size) for c in runs}) == 1
    conditional = configs.get_config("row_lstm_fashion_mnist_conditional")
    assert conditional.model.num_classes == 10 and conditional.data.name == "fashion_mnist"
    smoke = configs.get_config("row_lstm_fashion_mnist_smoke")
    assert (smoke.data.name, smoke.data.strict, smoke.model.num_levels) == (
        "embedded_mnist",
        True,
        256,
    )


def test_unknown_name_lists_known_configs():
    with pytest.raises(ValueError, match="Unknown config 'row_lstm_mnsit'") as error:
        configs.get_config("row_lstm_mnsit")
    for name in MAIN_CONFIGS:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        configs.get_config("experiments/configs/nope.py")


def test_path_and_name_resolve_to_the_same_config():
    by_path = configs.get_config(str(configs.CONFIG_DIR / "row_lstm_cifar10.py"))
    assert by_path == configs.get_config("row_lstm_cifar10")
    assert configs.config_name(str(configs.CONFIG_DIR / "pixelcnn_mnist.py")) == "pixelcnn_mnist"


def _parse(argv, monkeypatch):
    # ml_collections reads the --config.* overrides from sys.argv.
    argv = ["prog", *argv]
    monkeypatch.setattr(sys, "argv", argv)
    flag_values = flags.FlagValues()
    configs.define_config_flag("config", flag_values=flag_values)
    flag_values(argv)
    return flag_values.config


def test_flag_accepts_name_path_and_overrides(monkeypatch):
    config = _parse(["--config=row_lstm_mnist_smoke", "--config.train.batch_size=8"], monkeypatch)
    assert config.train.batch_size == 8
    path = configs.CONFIG_DIR / "pixelcnn_mnist.py"
    config = _parse([f"--config={path}", "--config.model.unroll=full"], monkeypatch)
    assert config.model.name == "pixelcnn" and config.model.unroll == "full"


def test_flag_rejects_misspelt_override_and_unknown_name(monkeypatch):
    with pytest.raises(flags.Error, match="Did you mean config.train.batch_size") as error:
        _parse(["--config=row_lstm_mnist_smoke", "--config.train.batch_sise=8"], monkeypatch)
    assert "Fields of config.train: batch_size, checkpoint_every" in str(error.value)
    with pytest.raises(flags.Error, match="config has no field 'trian'"):
        _parse(["--config=row_lstm_mnist_smoke", "--config.trian.batch_size=8"], monkeypatch)
    with pytest.raises(flags.Error, match="row_lstm_mnist"):
        _parse(["--config=row_lstm_mnsit"], monkeypatch)


def _shrink(config):
    """The named config at the *_smoke model size, whose step compiles in seconds."""
    config.model.num_layers = 1
    config.model.hidden_dim = 4
    config.model.output_dim = 8
    config.model.first_kernel_size = 3
    if "multiscale" in config.model:  # the sizes of multiscale_imagenet64_smoke
        config.model.multiscale.cond_dim = 4
        config.model.multiscale.encoder_layers = 1
        config.model.multiscale.small.num_layers = 1
        config.model.multiscale.small.hidden_dim = 4
    return config


@functools.cache
def _one_train_step(model_json: str, train_json: str):
    """Builds the model and takes one data-parallel train step on tiny random images.

    Cached on the (shrunk) model and optimiser settings: configs that are identical at this
    size (e.g. a config and its *_smoke variant) share one compilation.
    """
    model_config = ml_collections.ConfigDict(json.loads(model_json))
    model = models.build_model(model_config)
    tx = train.make_optimizer(ml_collections.ConfigDict(json.loads(train_json)))
    mesh = parallel.make_mesh(jax.devices()[:1])
    image_shape = (6, 6, model_config.num_channels)  # tiny images: compile time dominates
    init = functools.partial(train.init_train_state, model=model, tx=tx, image_shape=image_shape)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    before = jax.tree.map(np.array, state.params)
    images = np.random.default_rng(0).integers(0, model_config.num_levels, (2, *image_shape))
    step = train.make_train_step(model, tx, model_config.num_levels, mesh)
    batch = {"image": images}
    if model_config.num_classes:  # class-conditional configs train on labelled batches
        batch["label"] = np.arange(len(images), dtype=np.int32) % model_config.num_classes
    state, metrics = step(state, parallel.shard_batch(batch, mesh), jax.random.PRNGKey(1))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, state.params)
    uniform = math.prod(image_shape) * math.log(model_config.num_levels)
    return {
        "loss": float(metrics["loss"]),
        "uniform": uniform,
        "step": int(state.step),
        "any_param_changed": any(jax.tree.leaves(changed)),
        "grad_norm_finite": bool(jnp.isfinite(metrics["grad_norm"])),
    }


@pytest.mark.parametrize("name", configs.list_configs())
def test_named_config_builds_its_model_and_takes_one_train_step(name):
    config = _shrink(configs.get_config(name))
    optimiser_fields = ("optimizer", "learning_rate", "rmsprop_decay", "eps", "grad_clip_norm")
    result = _one_train_step(
        json.dumps(config.model.to_dict(), sort_keys=True),
        json.dumps({k: config.train[k] for k in optimiser_fields}, sort_keys=True),
    )
    # An untrained model is near uniform: about log(levels) nats per sub-pixel.
    assert 0.5 * result["uniform"] < result["loss"] < 2.0 * result["uniform"]
    assert result["step"] == 1
    assert result["any_param_changed"]
    assert result["grad_norm_finite"]
