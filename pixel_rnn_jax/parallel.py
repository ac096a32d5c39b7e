"""Data parallelism: a one-axis device mesh and `jax.jit(jax.shard_map(step))`.

The train and eval steps are written in pmap's per-device programming model: each device
sees its slice of the global batch and averages gradients and metrics with
`lax.pmean(..., DATA_AXIS)`. `jax.shard_map` inside `jax.jit` gives that model on JAX's
supported path (`jax.pmap` is in maintenance mode and is itself implemented this way now).

Parameters are replicated (`P()`), batches are sharded along their leading axis
(`P(DATA_AXIS)`), and the mesh spans every device of every process, so the same code runs on
one CPU, on 8 forced host-platform devices, and on a multi-host TPU slice.

`check_vma=False` is deliberate: with the default `check_vma=True`, the gradient of a
replicated parameter taken inside the map is already summed over devices, so the explicit
`pmean` would give N times the true gradient (see shared ENVIRONMENT.md). With it off, the
per-device gradient is local and `pmean` makes it the global-batch gradient; tests check
that 1-device and 8-device steps agree.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """Returns a mesh with one axis, `DATA_AXIS`, over `devices` (default: all, all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters and optimiser state: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of batches: the leading (example) axis split over `DATA_AXIS`."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size"):
    """Raises ValueError unless the global batch splits evenly over the mesh's devices."""
    num_devices = mesh.devices.size
    if global_batch_size <= 0 or global_batch_size % num_devices:
        raise ValueError(
            f"{what}={global_batch_size} must be a positive multiple of the number of devices "
            f"({num_devices}: {jax.process_count()} process(es) x "
            f"{jax.local_device_count()} local device(s)). Set --config.{what} to a multiple "
            f"of {num_devices}."
        )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host values (identical on every process) on all devices of `mesh`."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Builds global batch arrays from this process's examples.

    Args:
      local_batch: arrays `[local_batch, ...]`, this process's share of the global batch
        (global batch / process count examples, in process order).
      mesh: the data mesh.

    Returns:
      Global `jax.Array`s `[global_batch, ...]` sharded along `DATA_AXIS`.
    """
    sharding = batch_sharding(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
    }


def data_parallel(
    per_device_fn: Callable[..., Any],
    mesh: Mesh,
    *,
    in_specs: tuple[Any, ...],
    out_specs: Any,
    donate_argnums: tuple[int, ...] = (),
) -> Callable[..., Any]:
    """Wraps a per-device function (pmap style) as `jax.jit(jax.shard_map(...))` over `mesh`.

    Args:
      per_device_fn: function of per-device values; it may use collectives over `DATA_AXIS`.
      mesh: the data mesh.
      in_specs: one PartitionSpec (or pytree of them) per positional argument, e.g.
        `(P(), P(DATA_AXIS), P())` for (replicated state, sharded batch, replicated key).
      out_specs: PartitionSpecs of the outputs; `P()` for values the function made identical
        on every device with `pmean`/`psum`.
      donate_argnums: arguments whose buffers the step may reuse (the train state).

    Returns:
      The jitted global function.
    """
    mapped = jax.shard_map(
        per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped, donate_argnums=donate_argnums)


def maybe_initialize_distributed(
    enable: bool, coordinator_address: str | None = None, initialization_timeout: int = 300
):
    """Calls `jax.distributed.initialize()` for multi-process runs; a no-op when not enabled.

    On Cloud TPU and SLURM/Open MPI clusters JAX finds the coordinator, process count and
    process id in the environment; elsewhere set JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID (or pass `coordinator_address`).

    Args:
      enable: whether this run is one process of several.
      coordinator_address: 'host:port' of process 0, or None to let JAX find it.
      initialization_timeout: seconds to wait for every process to join before failing.
    """
    if not enable:
        return
    kwargs = {"initialization_timeout": initialization_timeout}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    jax.distributed.initialize(**kwargs)
