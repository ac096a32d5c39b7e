"""A target's devices, described to XLA with no accelerator attached.

`jax.experimental.topologies.get_topology_desc` builds devices that programs can be compiled
for but never run on: a TPU slice from libtpu's own topology names, a set of GPUs from a
`GpuTargetConfigProto` (the files in `gpu_specs/`, written for this project from the vendor's
data sheets). The compilers come from the `targets` extra; this module says so in one line
when they are missing.

The process must run with `JAX_PLATFORMS=cpu` (`prepare_environment`, before jax is
imported): the CUDA plugin otherwise tries to open a GPU and the topology call fails.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import sys

from experiments.targets.catalog import Target
from pixel_rnn_jax.errors import UserError

SPECS = pathlib.Path(__file__).parent / "gpu_specs"
INSTALL = "pip install -e '.[targets]'"


class MissingCompilerError(UserError, RuntimeError):
    """The TPU or CUDA compiler of the `targets` extra is not installed."""


def prepare_environment() -> None:
    """The environment deviceless compiling needs; call before jax starts a backend.

    `JAX_PLATFORMS=cpu` keeps the CUDA plugin from looking for a GPU (the topology call fails
    without it); the persistent compilation cache is turned off;
    `ALLOW_MULTIPLE_LIBTPU_LOAD=1` lets two processes (pytest workers, a training run beside
    a compile) load libtpu at once; the last two only silence libtpu's warnings about not
    running on a TPU VM.
    """
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # An executable for devices that are not attached cannot be read back from JAX's
    # persistent compilation cache (`compiled.analyse` caches the results instead).
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    if "jax" in sys.modules:  # imported already: its config read the environment then
        sys.modules["jax"].config.update("jax_platforms", "cpu")
        sys.modules["jax"].config.update("jax_enable_compilation_cache", False)


def check_compiler(platform: str) -> None:
    """Raises MissingCompilerError, naming the install command, without `platform`'s compiler."""
    package = {"tpu": "libtpu", "gpu": "jax_plugins.xla_cuda12"}[platform]
    try:
        found = importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise MissingCompilerError(
            f"Compiling for a {platform.upper()} target needs the `targets` extra ({package} is "
            f"not installed): {INSTALL}"
        )


@functools.cache
def target_devices(target: Target) -> tuple:
    """The target's devices, one per chip, in the order `jax.devices()` gives them on it.

    Raises:
      MissingCompilerError: the target's compiler is not installed.
    """
    check_compiler(target.platform)
    from jax.experimental import topologies

    if target.platform == "tpu":
        topology = topologies.get_topology_desc(
            platform="tpu",
            topology_name=target.topology,
            chip_config_name="megacore" if target.megacore else "default",
            chips_per_host_bounds=target.chips_per_host,
            num_slices=target.slices,
            wrap=(False, False, False),
        )
    else:
        spec = (SPECS / f"{target.chip_key}.txtpb").read_text()
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=spec, topology=target.topology
        )
    devices = tuple(topology.devices)
    if len(devices) != target.chips:  # the catalog and libtpu must agree on the slice
        raise RuntimeError(
            f"{target.name}: the topology has {len(devices)} devices, the catalog {target.chips}."
        )
    return devices
