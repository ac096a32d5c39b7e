"""End-to-end runner tests on the embedded data: outputs, resume, NaN, SIGTERM."""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from experiments import configs
from pixel_rnn_jax import checkpoints, errors, metric_logging, parallel, train

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(compilation_cache):
    """Shares compiled steps between the runs of one test (each run re-jits the same steps)."""
    return compilation_cache


def _smoke(**train_overrides):
    """row_lstm_mnist_smoke without samples and with a 1-batch eval unless overridden."""
    config = configs.get_config("row_lstm_mnist_smoke")
    config.train.num_samples = 0
    config.train.eval_max_batches = 1
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def _checkpoint_params(config, workdir):
    loaded = train.load_checkpoint(config, str(workdir))
    return loaded.step, jax.tree.map(np.asarray, loaded.params)


def _data_state(workdir, step):
    path = pathlib.Path(workdir) / "checkpoints" / str(step) / "data" / "metadata"
    return json.loads(path.read_text())


def test_end_to_end_outputs_then_resume_past_a_corrupt_checkpoint(tmp_path, caplog):
    config = _smoke(num_samples=2, num_steps=4, checkpoint_every=2, eval_every=4, log_every=2)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["step"] == 4 and not result["preempted"]
    assert np.isfinite(result["eval/nll"]) and result["eval/num_images"] == 8

    rows = metric_logging.read_metrics(str(tmp_path))
    train_rows = [r for r in rows if "train/loss" in r]
    eval_rows = [r for r in rows if "eval/nll" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    for key in ("train/bits_per_dim", "train/grad_norm", "train/param_norm", "images_per_sec"):
        assert key in train_rows[0]
    assert [r["step"] for r in eval_rows] == [4]
    assert eval_rows[0]["eval/bits_per_dim"] == pytest.approx(
        eval_rows[0]["eval/nll"] / (28 * 28 * np.log(2))
    )
    images = sorted(os.listdir(tmp_path / metric_logging.IMAGES_DIR))
    assert images == ["completions_00000004.png", "samples_00000004.png"]
    assert os.listdir(tmp_path / metric_logging.TENSORBOARD_DIR)
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["dataset"]["name"] == "embedded_binarized_mnist"
    assert info["fallback_reason"] is None
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]

    # Damage the latest checkpoint: the next run must say so and resume from step 2.
    for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    config.train.num_steps = 6
    config.train.num_samples = 0
    with caplog.at_level(logging.WARNING):
        result = train.train_and_evaluate(config, str(tmp_path))
    assert "Checkpoint at step 4" in caplog.text and "cannot be restored" in caplog.text
    assert "Resumed from step 2" in caplog.text
    assert result["step"] == 6
    train_steps = [
        r["step"] for r in metric_logging.read_metrics(str(tmp_path)) if "train/loss" in r
    ]
    assert train_steps == [2, 4, 6]  # rows after the resumed step were rewritten, not doubled
    assert len(os.listdir(tmp_path / checkpoints.QUARANTINE_SUBDIR)) == 1


def test_interrupted_run_equals_straight_run_even_when_the_resume_adds_a_decay(tmp_path):
    """Resuming is exact, and a decay added on resume continues a constant-rate checkpoint.

    The straight run decays from update 1 (updates 0 and 1 at the full rate, 2 at half, the
    last, 3, at lr_final_fraction = 0); the interrupted one trains 2 steps at a constant
    rate and resumes with the same decay.
    """
    common = {"log_every": 1, "eval_every": 0, "checkpoint_every": 1000}
    decay = {"lr_decay_start": 1, "lr_final_fraction": 0.0}
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train.train_and_evaluate(_smoke(num_steps=4, **common, **decay), str(straight))
    train.train_and_evaluate(_smoke(num_steps=2, **common), str(interrupted))
    assert sorted(os.listdir(interrupted / "checkpoints")) == ["2"]
    train.train_and_evaluate(_smoke(num_steps=4, **common, **decay), str(interrupted))

    step_a, params_a = _checkpoint_params(_smoke(), straight)
    step_b, params_b = _checkpoint_params(_smoke(), interrupted)
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    # The data stream continued where it stopped: same position, same per-step losses.
    assert _data_state(straight, 4) == _data_state(interrupted, 4)
    assert _data_state(interrupted, 4)["states"][0] != _data_state(interrupted, 2)["states"][0]
    rows = [
        [r for r in metric_logging.read_metrics(str(d)) if "train/loss" in r]
        for d in (straight, interrupted)
    ]
    losses = [{r["step"]: r["train/loss"] for r in run} for run in rows]
    assert losses[0] == losses[1] and sorted(losses[0]) == [1, 2, 3, 4]
    # Logged step s is update s - 1's rate: the last update (to step 4) at the final 0.
    rates = {r["step"]: r["train/learning_rate"] for r in rows[1]}
    assert rates == pytest.approx({1: 1e-3, 2: 1e-3, 3: 5e-4, 4: 0.0})


class _PixelLogits(flax.linen.Module):
    """The smallest model a train step accepts: one learned Bernoulli logit per sub-pixel."""

    num_classes: int = 0

    @flax.linen.compact
    def __call__(self, images, labels=None):
        del labels
        logits = self.param("logits", flax.linen.initializers.zeros, images.shape[1:])
        return jnp.broadcast_to(logits, images.shape)


def test_learning_rate_scale_multiplies_the_update_like_a_smaller_rate():
    config = _smoke(num_steps=4, lr_decay_start=1, lr_final_fraction=0.0)
    scale = train.learning_rate_scale(config.train)
    assert [float(scale(step)) for step in range(4)] == [1.0, 1.0, 0.5, 0.0]
    half_rate = _smoke(learning_rate=config.train.learning_rate / 2)

    model = _PixelLogits()
    tx = train.make_optimizer(config.train)
    state = train.init_train_state(jax.random.key(0), model=model, tx=tx, image_shape=(4, 4, 1))
    state = jax.device_get(state.replace(step=jnp.int32(2)))
    batch = {"image": np.random.default_rng(0).integers(0, 2, (4, 4, 4, 1))}
    mesh = parallel.make_mesh()

    def params_after_one_step(tx, lr_scale):
        step = train.make_train_step(model, tx, 2, mesh, lr_scale=lr_scale)
        new_state, metrics = step(
            parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh), jax.random.key(1)
        )
        return jax.device_get(new_state.params), metrics

    scaled, metrics = params_after_one_step(tx, scale)
    reference, _ = params_after_one_step(train.make_optimizer(half_rate.train), None)
    assert float(metrics["lr_scale"]) == 0.5
    np.testing.assert_allclose(scaled["logits"], reference["logits"], rtol=1e-6)
    # The half-rate update is not zero, so an unscaled (full-rate) update would differ.
    assert np.max(np.abs(reference["logits"] - state.params["logits"])) > 1e-3


@pytest.mark.parametrize(("num_steps", "start", "final"), [(4, 2, 0.0), (10, 0, 0.25), (7, 3, 0.5)])
def test_the_last_update_runs_at_the_final_fraction(num_steps, start, final):
    config = _smoke(num_steps=num_steps, lr_decay_start=start, lr_final_fraction=final)
    scale = train.learning_rate_scale(config.train)
    scales = [float(scale(step)) for step in range(num_steps)]  # the updates that run
    assert scales[: start + 1] == [1.0] * (start + 1)
    assert scales[-1] == pytest.approx(final)
    steps = np.diff(scales[start:])  # linear: equal decrements down to the last update
    np.testing.assert_allclose(steps, (final - 1.0) / (num_steps - 1 - start), rtol=1e-5)


@pytest.mark.parametrize(
    ("decay_start", "final_fraction"),
    [(3, 0.0), (4, 0.0), (-1, 0.0), (2, 1.5)],
    ids=["decays_nothing", "end", "negative", "fraction"],
)
def test_a_decay_that_cannot_run_is_refused_before_the_workdir_is_made(
    tmp_path, decay_start, final_fraction
):
    config = _smoke(num_steps=4, lr_decay_start=decay_start, lr_final_fraction=final_fraction)
    with pytest.raises(errors.ConfigError, match="train.lr_"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = _smoke(num_steps=2, checkpoint_every=1, eval_every=0)
    train.train_and_evaluate(config, str(tmp_path))
    _, good_params = _checkpoint_params(config, tmp_path)

    # An infinite learning rate makes the parameters non-finite in the first update.
    config = _smoke(num_steps=6, checkpoint_every=1, eval_every=0, learning_rate=float("inf"))
    with pytest.raises(train.TrainingDivergedError, match=r"diverged at step 3\b") as error:
        train.train_and_evaluate(config, str(tmp_path))
    assert "last good checkpoint (step 2)" in str(error.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
    step, params = _checkpoint_params(config, tmp_path)
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, good_params, params)


def test_model_that_does_not_fit_the_data_fails_before_training(tmp_path):
    config = _smoke()
    config.model.num_levels = 256
    with pytest.raises(ValueError, match="num_levels=2"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_url_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Cloud Storage FUSE"):
        train.train_and_evaluate(_smoke(), "gs://bucket/run")
    assert not os.listdir(tmp_path)  # no local 'gs:' folder


def _smoke_cli(workdir, *flags):
    """`python -m experiments.train` on row_lstm_mnist_smoke: log every step, no eval/samples."""
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=row_lstm_mnist_smoke",
        f"--workdir={workdir}",
        "--config.train.log_every=1",
        "--config.train.eval_every=0",
        "--config.train.num_samples=0",
        *flags,
    ]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, _compilation_cache):
    workdir = tmp_path / "run"
    command = _smoke_cli(
        workdir, "--config.train.num_steps=1000000", "--config.train.checkpoint_every=1000000"
    )
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": _compilation_cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while not metric_logging.read_metrics(str(workdir)):  # training is under way
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    stopped = [line for line in output.splitlines() if line.startswith("Stopped at step")]
    assert stopped, output
    step = int(stopped[0].split()[3])
    assert 0 < step < 1_000_000
    assert os.listdir(workdir / "checkpoints") == [str(step)]


def test_cpu_devices_flag_trains_data_parallel_over_that_many_devices(tmp_path, _compilation_cache):
    workdir = tmp_path / "run"
    command = _smoke_cli(workdir, "--cpu_devices=2", "--config.train.num_steps=2")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": _compilation_cache}
    env.pop("XLA_FLAGS", None)  # the flag alone must give the devices
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    devices = json.loads((workdir / "config.json").read_text())["devices"]
    assert devices["device_count"] == 2
    assert devices["mesh_shape"] == {"data": 2}
    rows = metric_logging.read_metrics(str(workdir))
    assert [r["step"] for r in rows if "train/loss" in r][-1] == 2


def test_dataset_with_a_validation_split_selects_on_it_and_reports_the_best_on_test(tmp_path):
    # A tiny binarized MNIST in the real format (train / validation / test), prepared offline.
    import data_fixtures  # noqa: PLC0415 - tests/ helper, imported where it is needed

    from pixel_rnn_jax.data import prepare  # noqa: PLC0415

    data_fixtures.make_sources(tmp_path / "source")
    data_dir = str(tmp_path / "data")
    prepare.prepare_dataset(
        "binarized_mnist", data_dir, source=str(tmp_path / "source"), verify_checksums=False
    )
    config = _smoke(num_steps=4, eval_every=2, checkpoint_every=2, log_every=2)
    config.data.name, config.data.data_dir = "binarized_mnist", data_dir
    config.train.eval_max_batches = 0  # the whole (tiny) splits
    result = train.train_and_evaluate(config, str(tmp_path / "run"))

    # Evaluation during training is on validation (9 images), never on test (7 images).
    assert result["eval_split"] == "validation" and result["selected_by"] == "validation"
    eval_rows = [r for r in metric_logging.read_metrics(str(tmp_path / "run")) if "eval/nll" in r]
    assert [r["step"] for r in eval_rows] == [2, 4]
    assert {r["eval/num_images"] for r in eval_rows} == {9}
    # The reported number is the best-by-validation checkpoint's, on the test split.
    best = min(eval_rows, key=lambda r: r["eval/nll"])
    assert result["test/checkpoint_step"] == best["step"]
    assert result["test/num_images"] == 7
    on_test = train.evaluate_checkpoint(config, str(tmp_path / "run"), "best")
    assert on_test["split"] == "test" and on_test["step"] == best["step"]
    assert on_test["eval/nll"] == pytest.approx(result["test/nll"], rel=1e-6)
    on_validation = train.evaluate_checkpoint(config, str(tmp_path / "run"), "best", "validation")
    assert on_validation["eval/nll"] == pytest.approx(best["eval/nll"], rel=1e-6)
    with pytest.raises(ValueError, match="no split 'nope'"):
        train.evaluate_checkpoint(config, str(tmp_path / "run"), "best", "nope")


def test_dataset_without_a_validation_split_reports_the_last_step(tmp_path):
    result = train.train_and_evaluate(_smoke(num_steps=2, eval_every=2), str(tmp_path))
    assert result["eval_split"] == "test" and result["selected_by"] == "last step"
    assert not any(key.startswith("test/") for key in result)


# ---------------------------------------------------------------------------------------
# Class-conditional runs.


def test_conditional_run_trains_evaluates_samples_by_class_and_resumes(tmp_path, caplog):
    config = configs.get_config("row_lstm_mnist_conditional_smoke")
    config.train.num_steps = 2
    config.train.eval_every = 2
    config.train.eval_max_batches = 1
    config.train.num_samples = 10  # one per class
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["step"] == 2 and np.isfinite(result["eval/nll"])
    grid = np.asarray(Image.open(tmp_path / metric_logging.IMAGES_DIR / "samples_00000002.png"))
    # One row per class: 10 rows of one 28x28 image at image_scale 4, 1-pixel separators.
    scale = config.train.image_scale
    assert grid.shape[:2] == (10 * (28 * scale + 1) + 1, 28 * scale + 2)

    # Resume to step 3: the labelled data stream continues, the model conditions again.
    config.train.num_steps = 3
    config.train.num_samples = 0
    with caplog.at_level(logging.INFO):
        result = train.train_and_evaluate(config, str(tmp_path))
    assert "Resumed from the checkpoint at step 2" in caplog.text
    assert result["step"] == 3 and np.isfinite(result["eval/nll"])

    # Samples of one class, or a grid by class, from the checkpoint; labels are saved.
    out = tmp_path / "samples"
    paths = train.sample_checkpoint(config, str(tmp_path), str(out), num=3, label=7)
    assert np.load(paths["samples_npz"])["labels"].tolist() == [7, 7, 7]
    paths = train.sample_checkpoint(config, str(tmp_path), str(out), num=20, label="all")
    assert np.load(paths["samples_npz"])["labels"].tolist() == sorted(list(range(10)) * 2)
    for label, message in ((10, r"class in \[0, 10\)"), ("three", "or 'all'")):
        with pytest.raises(ValueError, match=message):
            train.sample_checkpoint(config, str(tmp_path), str(out), num=2, label=label)
    # The evaluation is the conditional NLL, over the whole test split.
    metrics = train.evaluate_checkpoint(config, str(tmp_path))
    assert metrics["step"] == 3 and metrics["eval/num_images"] == 1000


def test_label_for_an_unconditional_run_is_refused_before_restoring(tmp_path):
    with pytest.raises(ValueError, match="model is unconditional"):
        train.sample_checkpoint(_smoke(), str(tmp_path), str(tmp_path / "out"), label=3)


@pytest.mark.parametrize(
    "data_name,message",
    (
        ("binarized_mnist", "'embedded_binarized_mnist' \\(the stand-in for 'binarized_mnist'\\)"),
        ("embedded_rgb32", "'embedded_rgb32' has no class labels"),
    ),
)
def test_conditional_config_on_a_dataset_without_labels_fails_at_start(
    tmp_path, data_name, message
):
    config = configs.get_config("row_lstm_mnist_conditional_smoke")
    config.data.name = data_name
    config.data.strict = False
    if data_name == "embedded_rgb32":
        config.model.num_channels, config.model.num_levels = 3, 256
    with pytest.raises(ValueError, match=message) as error:
        train.train_and_evaluate(config, str(tmp_path))
    assert "--config.data.name=mnist" in str(error.value)
    assert "embedded_binarized_mnist" in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_num_classes_must_match_the_datasets(tmp_path):
    config = configs.get_config("row_lstm_mnist_conditional_smoke")
    config.model.num_classes = 5
    with pytest.raises(ValueError, match="--config.model.num_classes=10"):
        train.train_and_evaluate(config, str(tmp_path))


def test_l2_weight_adds_exactly_its_gradient_and_logs_the_penalty():
    """With SGD at rate 1, the penalty's whole effect on an update is -2 * lambda * params."""
    model = _PixelLogits()
    tx = optax.sgd(1.0)
    state = train.init_train_state(jax.random.key(0), model=model, tx=tx, image_shape=(4, 4, 1))
    params = {"logits": np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(4, 4, 1)}
    state = jax.device_get(state.replace(params=params))
    batch = {"image": np.random.default_rng(0).integers(0, 2, (4, 4, 4, 1))}
    mesh = parallel.make_mesh()

    def one_step(l2_weight):
        step = train.make_train_step(model, tx, 2, mesh, l2_weight=l2_weight)
        new_state, metrics = step(
            parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh), jax.random.key(1)
        )
        return jax.device_get(new_state.params)["logits"], jax.device_get(metrics)

    plain, plain_metrics = one_step(0.0)
    penalised, metrics = one_step(0.25)
    assert "l2_penalty" not in plain_metrics
    np.testing.assert_allclose(penalised - plain, -2 * 0.25 * params["logits"], atol=1e-6)
    np.testing.assert_allclose(metrics["l2_penalty"], 0.25 * np.sum(params["logits"] ** 2))
    # The logged loss stays the NLL alone, so bits/dim are comparable with unpenalised runs.
    np.testing.assert_allclose(metrics["loss"], plain_metrics["loss"], rtol=1e-6)
