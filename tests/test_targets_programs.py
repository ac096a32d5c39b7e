"""The runner's programs built for a target: its mesh, its per-host batches, its schedule,
and bfloat16 compute over float32 state in the programs compiled for a TPU and a GPU."""

import re

import jax
import ml_collections
import numpy as np
import pytest

from experiments import configs
from experiments.targets import catalog, devices, programs
from pixel_rnn_jax.errors import ConfigError
from pixel_rnn_jax.nn import recurrence

CONFIG = "row_lstm_mnist_smoke"


def smoke(**model):
    config = ml_collections.ConfigDict(configs.get_config(CONFIG).to_dict())
    config.model.update(model)
    return config


def build(target_name, per_chip_batch=2, config=None, which=programs.PROGRAMS):
    target = catalog.parse(target_name)
    return target, programs.build(
        config or smoke(), target, devices.target_devices(target), per_chip_batch, which=which
    )


def test_devices_match_the_catalog_on_every_platform():
    for name, kind, hosts in [("v5e-16", "TPU v5 lite", 4), ("v4-16", "TPU v4", 2)]:
        found = devices.target_devices(catalog.parse(name))
        assert {d.device_kind for d in found} == {kind}
        assert len({d.process_index for d in found}) == hosts
    gpus = devices.target_devices(catalog.parse("h100x16"))
    assert len(gpus) == 16 and len({d.process_index for d in gpus}) == 2
    assert gpus[0].platform == "gpu"


def test_a_multi_host_slice_splits_the_batch_over_every_chip_and_samples_on_one_host():
    target, (train_step, eval_step, sample) = build("v5e-16", per_chip_batch=3)
    state, batch, key = train_step.args
    assert batch["image"].shape == (48, 28, 28, 1)  # 3 per chip x 16 chips over 4 hosts
    assert batch["image"].sharding.mesh.devices.size == 16
    assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert all(
        leaf.sharding.spec == jax.sharding.PartitionSpec() for leaf in jax.tree.leaves(state)
    )
    assert eval_step.args[1]["mask"].shape == (48,)
    assert sample.chips == 4 and sample.images == 12  # one host's 4 chips
    assert sample.args[2].sharding.mesh.devices.size == 4


def test_auto_resolves_for_the_targets_platform_and_kind_not_this_machines(monkeypatch):
    diagonal = ml_collections.ConfigDict(
        configs.get_config("diagonal_bilstm_mnist_smoke").model.to_dict()
    )
    assert programs.model_config_for(diagonal, "tpu").schedule == "latency"
    assert programs.model_config_for(diagonal, "cpu").schedule == "throughput"
    diagonal.hidden_dim = 128  # a CIFAR-width Diagonal BiLSTM takes the other on a TPU
    assert programs.model_config_for(diagonal, "tpu").schedule == "throughput"
    assert programs.model_config_for(diagonal, "gpu").schedule == "latency"
    assert programs.model_config_for(smoke(schedule="latency").model, "tpu").schedule == "latency"
    multiscale = configs.get_config("multiscale_imagenet64_smoke").model
    assert programs.model_config_for(multiscale, "tpu").schedule == "throughput"  # Row LSTM parts
    monkeypatch.setitem(recurrence.AUTO_SCHEDULE, "tpu", {"*": "throughput", "row_lstm": "latency"})
    mixed = ml_collections.ConfigDict(multiscale.to_dict())
    mixed.multiscale.conditional_name = "pixelcnn"
    with pytest.raises(ConfigError, match="set --config.model.schedule"):
        programs.model_config_for(mixed, "tpu")


def test_a_class_conditional_model_gets_labels_in_every_program():
    config = ml_collections.ConfigDict(
        configs.get_config("row_lstm_mnist_conditional_smoke").to_dict()
    )
    _, built = build("v5e-4", config=config)
    assert built[0].args[1]["label"].shape == (8,)
    assert built[1].args[1]["label"].shape == (8,)
    assert built[2].args[3].shape == (8,)


def test_the_global_batch_must_split_over_hosts():
    target = catalog.parse("v5e-16")
    with pytest.raises(ConfigError, match="global batch"):
        programs.data.check_global_batch(20, target.chips, target.hosts, what="the global batch")


_PRODUCT = re.compile(r"stablehlo\.(?:dot_general|convolution)[^\n]*: \((tensor<[^)]*)\)")


@pytest.mark.parametrize("target_name", ["v5e-4", "h100"])
def test_bfloat16_computes_in_bfloat16_over_float32_state(target_name):
    target, (train_step,) = build(target_name, config=smoke(dtype="bfloat16"), which=["train_step"])
    state = train_step.args[0]
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    lowered = train_step.fn.lower(*train_step.args)
    operand_types = {
        kind
        for types in _PRODUCT.findall(lowered.as_text())
        for kind in re.findall(r"x([a-z]+\d*)>", types)
    }
    assert operand_types == {"bf16"}  # every matmul and convolution takes bfloat16 operands
    options = {"xla_gpu_collect_cost_model_stats": True} if target.platform == "gpu" else None
    text = lowered.compile(options).as_text() if options else lowered.compile().as_text()
    products = re.findall(r"= (\w+)\[[^=]*? (?:convolution|dot)\(", text)
    # The target's compiler kept them in bfloat16 (only the logits head produces float32).
    assert products.count("bf16") >= len(products) - 2 and products.count("bf16") > 0


def test_the_per_chip_batch_flag():
    target = catalog.parse("v5e-8")
    config = configs.get_config(CONFIG)  # a global batch of 4: does not split over 8 chips
    assert programs.per_chip_batch("3", config, target) == 3
    assert programs.per_chip_batch("max", config, target) is None
    for bad in ("lots", "0", "-2"):
        with pytest.raises(ConfigError, match="--per_chip_batch must be"):
            programs.per_chip_batch(bad, config, target)
    with pytest.raises(ConfigError, match="train.batch_size"):
        programs.per_chip_batch(None, config, target)
