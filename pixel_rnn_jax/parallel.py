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

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pixel_rnn_jax.errors import DistributedSetupError

DATA_AXIS = "data"

# XLA options for the programs compiled on each platform. On CPU: LLVM at -O1 instead of
# XLA's default -O3. The heavy products run in library kernels either way; what LLVM
# compiles are the elementwise fusions and the loop bodies, and for this model family those
# ran faster at -O1 and compiled sooner (measured in WORKSPACE_NOTES.md, "CPU speed").
PLATFORM_COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "cpu": {"xla_backend_optimization_level": 1},
}


def compiler_options(platform: str) -> dict[str, Any] | None:
    """`jax.jit(..., compiler_options=)` for programs on `platform` ('cpu', 'gpu', 'tpu')."""
    options = PLATFORM_COMPILER_OPTIONS.get(platform)
    return dict(options) if options else None


def mesh_compiler_options(mesh: Mesh) -> dict[str, Any] | None:
    """`compiler_options` for the platform of `mesh`'s devices."""
    return compiler_options(mesh.devices.flat[0].platform)


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
      The jitted global function, compiled with `mesh_compiler_options(mesh)`.
    """
    mapped = jax.shard_map(
        per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(
        mapped, donate_argnums=donate_argnums, compiler_options=mesh_compiler_options(mesh)
    )


# JAX itself reads only JAX_COORDINATOR_ADDRESS (and finds everything on Cloud TPU, SLURM and
# Open MPI); the runner also reads the other two so that a plain multi-node launch needs no flags.
_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"
_HOW_TO_SET = (
    "On Cloud TPU VMs, SLURM and Open MPI JAX detects the coordinator, process count and "
    "process id itself; elsewhere pass --coordinator_address=HOST:PORT (process 0's address), "
    "--num_processes=N and --process_id=I (0..N-1, distinct), or set "
    f"{_ENV_COORDINATOR}, {_ENV_NUM_PROCESSES} and {_ENV_PROCESS_ID}."
)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"{name}={value!r} is not an integer.") from None


def split_address(address: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') -> (host, port); DistributedSetupError if malformed."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedSetupError(
            f"Coordinator address {address!r} is not HOST:PORT (e.g. 10.0.0.1:1234)."
        )
    return host, int(port)


def wait_for_coordinator(address: str, timeout_s: float, process_id: int | None = None) -> float:
    """Waits until a TCP connection to the coordinator at `address` succeeds.

    `jax.distributed.initialize` aborts the whole process (a C++ check failure,
    'DEADLINE_EXCEEDED ... RegisterTask') when the coordinator cannot be reached; probing the
    port first turns the common mistakes (wrong address, process 0 not started, a firewall)
    into a Python error that says what to check.

    Args:
      address: 'host:port' of process 0's coordinator service.
      timeout_s: give up after this many seconds.
      process_id: this process's id, for the message.

    Returns:
      Seconds it took.

    Raises:
      DistributedSetupError: nothing accepted a connection at `address` within `timeout_s`.
    """
    host, port = split_address(address)
    start = time.monotonic()
    deadline = start + timeout_s
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, remaining))):
                return time.monotonic() - start
        except OSError as error:  # refused, unreachable, unknown host, timed out
            last_error = error
        if time.monotonic() + 0.5 > deadline:
            break
        time.sleep(0.5)
    who = "This process" if process_id is None else f"Process {process_id}"
    raise DistributedSetupError(
        f"{who} could not reach the JAX coordinator at {address} within {timeout_s:g} s "
        f"(last error: {last_error}). Check that process 0 is running (it serves the "
        f"coordinator on port {port}); that {host!r} is process 0's address as seen from this "
        "host (127.0.0.1/localhost only works when every process runs on one machine); that "
        f"port {port} is open between the hosts; and that every process was given the same "
        "--coordinator_address. If process 0 starts later than the others, raise "
        "--distributed_timeout."
    )


def maybe_initialize_distributed(
    enable: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout: int = 300,
):
    """Calls `jax.distributed.initialize()` for multi-process runs; a no-op when not enabled.

    Must run before anything touches a JAX device. Unset arguments come from the environment
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or, on Cloud TPU VMs, SLURM
    and Open MPI, from JAX's own cluster detection.

    Failures are bounded by `initialization_timeout` and explained: a process other than 0
    first probes the coordinator's port and raises DistributedSetupError naming the address
    if nothing answers. When the coordinator is up but some process never joins, JAX itself
    ends every waiting process after the timeout (an abort reporting 'DEADLINE_EXCEEDED ...
    RegisterTask'); the log line written just before says what that means.

    Args:
      enable: whether this run is one process of several.
      coordinator_address: 'host:port' of process 0, or None.
      num_processes: number of processes, or None.
      process_id: this process's id in [0, num_processes), or None.
      initialization_timeout: seconds to wait for the coordinator and for every process.

    Raises:
      DistributedSetupError: settings missing or malformed, coordinator unreachable, or the
        coordinator service could not start on process 0 (e.g. its port is taken).
    """
    if not enable:
        return
    if jax.distributed.is_initialized():
        logging.info("jax.distributed is already initialized; not initializing again.")
        return
    coordinator_address = coordinator_address or os.environ.get(_ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(_ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(_ENV_PROCESS_ID)
    if coordinator_address is not None:
        split_address(coordinator_address)
    both_given = num_processes is not None and process_id is not None
    if both_given and (num_processes < 1 or not 0 <= process_id < num_processes):
        raise DistributedSetupError(
            f"process_id={process_id} must be in [0, num_processes={num_processes})."
        )
    if coordinator_address and process_id:  # not process 0: it would wait for itself
        waited = wait_for_coordinator(coordinator_address, initialization_timeout, process_id)
        logging.info("Coordinator %s answered after %.1f s.", coordinator_address, waited)
    where = coordinator_address or "the coordinator JAX detects from the cluster environment"
    who = "?" if process_id is None else process_id
    how_many = "?" if num_processes is None else num_processes
    logging.info(
        "Joining a multi-process run as process %s of %s via %s; waiting up to %d s for every "
        "process. If this process then stops with 'DEADLINE_EXCEEDED ... RegisterTask', not "
        "every process joined in time: start all of them with the same coordinator address "
        "and process count, and distinct process ids.",
        who,
        how_many,
        where,
        initialization_timeout,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=initialization_timeout,
        )
    except (ValueError, TypeError) as error:
        raise DistributedSetupError(
            f"Cannot start a multi-process run: {error}. {_HOW_TO_SET}"
        ) from error
    except Exception as error:  # noqa: BLE001 - JaxRuntimeError and friends, with context
        hint = ""
        if process_id == 0 and coordinator_address:
            hint = (
                f" Process 0 serves the coordinator on port {split_address(coordinator_address)[1]}"
                ": is that port already taken on this host (another run still alive)?"
            )
        raise DistributedSetupError(
            f"jax.distributed.initialize failed for coordinator {where}: "
            f"{type(error).__name__}: {error}.{hint}"
        ) from error
    logging.info(
        "Process %d of %d: %d local device(s), %d in all.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
