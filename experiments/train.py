r"""Trains a PixelRNN: `python -m experiments.train --config=row_lstm_mnist`.

--config takes a name from `experiments.configs.list_configs()` or a path to a config file;
fields are overridden with `--config.train.num_steps=2000`-style flags (a misspelt field is
an error). The run resumes from the newest checkpoint in --workdir that restores; damaged
ones are moved to <workdir>/checkpoints_corrupt/. If checkpoints exist but none restores, it
refuses to start: --config.train.start_fresh=True moves them aside and trains from step 0.
Set-up mistakes (unknown config, dataset not prepared, read-only workdir, ...) end with a
one-line `Error: ...` on stderr and exit status 1.

Multi-process (Cloud TPU pod slice, several GPU hosts): start the same command on every host
with --distributed (or PIXEL_RNN_DISTRIBUTED=1), which calls jax.distributed.initialize().
On Cloud TPU VMs, SLURM and Open MPI JAX finds the coordinator, process count and process id
itself; elsewhere add --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or
set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). --workdir must be a path
every host sees. One process on one multi-GPU host needs none of this: all its GPUs form the
mesh. On a CPU-only machine, --cpu_devices=<cores> trains data-parallel over the cores.
"""

import os

from absl import app, flags, logging

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics, images). Default ./workdirs/<config>."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    os.environ.get("PIXEL_RNN_DISTRIBUTED", "") == "1",
    "Call jax.distributed.initialize() (one process per host). Default from "
    "PIXEL_RNN_DISTRIBUTED=1.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 (default: JAX_COORDINATOR_ADDRESS or cluster auto-detection).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes",
    None,
    "Number of processes (default: JAX_NUM_PROCESSES or cluster auto-detection).",
    lower_bound=1,
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id",
    None,
    "This process's id in [0, num_processes) (default: JAX_PROCESS_ID or auto-detection).",
    lower_bound=0,
)
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout",
    300,
    "Seconds to wait for the coordinator and for every process to join before failing.",
    lower_bound=1,
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    None,
    "Split the CPU into this many XLA devices and train data-parallel over them (one per "
    "core is fastest: XLA:CPU runs a recurrence's small per-step kernels on one core; "
    "measured speed-ups in WORKSPACE_NOTES.md). Ignored when an accelerator is present; "
    "the global batch must divide evenly.",
    lower_bound=1,
)
flags.mark_flags_as_required(["config"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Imported after flag parsing so that --help stays fast and JAX sees its own flags.
    import jax  # noqa: PLC0415

    from pixel_rnn_jax import metric_logging, parallel, train

    if _CPU_DEVICES.value:
        # Must precede the first use of a JAX backend; only the CPU backend reads it.
        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    metric_logging.quiet_library_info_logs()
    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    parallel.maybe_initialize_distributed(
        # The coordinator/process flags mean nothing to a single process: they imply
        # --distributed, so a forgotten flag cannot silently start N independent runs.
        _DISTRIBUTED.value or any(value is not None for value in explicit),
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        initialization_timeout=_DISTRIBUTED_TIMEOUT.value,
    )
    name, workdir = configs.flag_run_dirs(_WORKDIR.value)
    print(f"Config {name}; workdir {os.path.abspath(workdir)}", flush=True)
    result = train.train_and_evaluate(_CONFIG.value, workdir)
    if result.get("preempted"):
        print(f"Stopped at step {result['step']} (SIGTERM); rerun the same command to resume.")
        return
    logging.info("Final metrics: %s", result)
    split = result["eval_split"]
    kind = " -log p(x | y)" if _CONFIG.value.model.num_classes else ""
    print(
        f"Step {result['step']}: {split} NLL{kind} {result['eval/nll']:.2f} nats/image "
        f"({result['eval/bits_per_dim']:.4f} bits/dim) on {result['eval/num_images']} {split} "
        f"images, {result['images_per_sec']:.0f} images/s."
    )
    if "test/nll" in result:
        print(
            f"Best checkpoint by validation NLL (step {result['test/checkpoint_step']}): test "
            f"NLL {result['test/nll']:.2f} nats/image ({result['test/bits_per_dim']:.4f} "
            f"bits/dim) on {result['test/num_images']} test images."
        )
    else:
        print(
            f"{result['dataset']!r} has no separate validation split: the number above is the "
            "last step's, not a selected checkpoint's."
        )
    if _CONFIG.value.paper_result:
        caveat = ""
        if result.get("fallback_reason"):
            caveat = f" (this run used the embedded stand-in {result['dataset']!r}: not comparable)"
        print(f"Paper: {_CONFIG.value.paper_result}{caveat}.")


if __name__ == "__main__":
    cli.run(main)
