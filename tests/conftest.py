"""Test-session set-up shared by every test file.

Tests never touch the user's ~/tensorflow_datasets: runs that leave `data.data_dir` unset
prepare the embedded datasets into a per-session temporary TFDS directory instead. This must
happen before TensorFlow Datasets is imported (it reads TFDS_DATA_DIR once, at import).
"""

import os
import tempfile

os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="pixel_rnn_jax_tfds_"))
# One persistent compilation cache for the whole session: the xdist workers and every child
# process inherit this environment, and many test files compile the same tiny programs.
# Tests that need a cold compile drop JAX_COMPILATION_CACHE_DIR from their child's
# environment; `compilation_cache` below gives a module its own.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="pixel_rnn_jax_xla_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite runs on the CPU. With the `targets` extra installed JAX would otherwise also start
# the TPU and CUDA plugins in every process (libtpu's start-up checks, "no GPU" warnings); the
# ahead-of-time tests compile for those targets from the CPU backend, as `experiments.aot`
# does, and two xdist workers may load libtpu at once.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402 - after TFDS_DATA_DIR is set
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for one test module, subprocesses included.

    Runner tests re-jit the same tiny steps in every run; with the cache each is compiled
    once per module. Yields the directory (pass it to child processes as
    JAX_COMPILATION_CACHE_DIR) and restores the previous settings afterwards.
    """
    previous = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    cache_dir = str(tmp_path_factory.mktemp("jax_cache"))
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield cache_dir
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, compilation_cache):
    """`smoke_run(config_name)`: a 2-step run of a smoke config, for the entry points' tests.

    No samples and one evaluation batch, so that it trains in seconds. Returns (workdir,
    the config it was trained with, the module's compilation cache directory, which child
    processes get as JAX_COMPILATION_CACHE_DIR).
    """
    from experiments import configs
    from pixel_rnn_jax import train

    def run(name: str):
        workdir = tmp_path_factory.mktemp("run")
        config = configs.get_config(name)
        config.train.num_steps = 2
        config.train.num_samples = 0
        config.train.eval_max_batches = 1
        train.train_and_evaluate(config, str(workdir))
        return str(workdir), config, compilation_cache

    return run
