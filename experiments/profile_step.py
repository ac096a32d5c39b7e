"""Where a train step's time goes: `python -m experiments.profile_step --output FILE.md`.

Traces a few calls of the runner's own train step (`benchmarks/runner_step.py`: clipping,
metrics, `shard_map`; unroll 1) with `jax.profiler` and prints, per model, the milliseconds
per step by direction (forward/backward), by XLA operation kind (all, and the backward
pass's alone), inside vs outside the recurrence loops, and by model scope. CPU traces only
(XLA:CPU's worker-thread events); see `experiments/benchmarks/profiling.py`.

Example:
  python -m experiments.profile_step --models=row_lstm,diagonal_bilstm --size=28 \\
      --output=benchmark_results/cpu_profile.md
"""

import shlex
import sys

from absl import app, flags

from experiments import cli

flags.DEFINE_list("models", ["row_lstm", "diagonal_bilstm"], "Models to profile.")
flags.DEFINE_enum("size", "28", ["8", "28", "32", "64"], "Benchmark size (see benchmarks/scan.py).")
flags.DEFINE_integer("batch_size", None, "Batch (default: the benchmark's for the size).")
flags.DEFINE_integer("calls", 5, "Traced train steps (after 2 untimed).", lower_bound=1)
flags.DEFINE_string("output", None, "Also write the tables to this Markdown file.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import jax  # noqa: PLC0415 - after flag parsing, so that --help stays fast

    from experiments.benchmarks import profiling, scan  # noqa: PLC0415
    from pixel_rnn_jax import metric_logging  # noqa: PLC0415

    metric_logging.quiet_library_info_logs()
    if jax.default_backend() != "cpu":
        raise app.UsageError(
            f"profile_step reads XLA:CPU traces; this process runs on {jax.default_backend()} "
            "(use JAX_PLATFORMS=cpu, or TensorBoard's profile plugin on accelerators)."
        )
    unknown = sorted(set(FLAGS.models) - set(scan.MODEL_NAMES))
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {scan.MODEL_NAMES}.")
    argv_flags = [a for a in sys.argv[1:] if a.startswith("--")]
    sections = []
    for name in FLAGS.models:
        summary = profiling.profile_train_step(
            name, int(FLAGS.size), FLAGS.batch_size, calls=FLAGS.calls
        )
        sections.append(profiling.format_summary(summary))
        print(sections[-1], flush=True)
    if FLAGS.output:
        machine = scan.machine_info()
        header = (
            "# Train-step profiles\n\n"
            f"- command: python -m experiments.profile_step {shlex.join(argv_flags)}\n"
            f"- machine: {machine['cpu_model']}, nproc={machine['nproc']}, load average "
            f"{machine['load_average']}, jax {jax.__version__}, GLIBC_TUNABLES="
            f"{machine['glibc_tunables'] or '(unset)'}\n\n"
        )
        with open(FLAGS.output, "w") as f:
            f.write(header + "\n".join(sections))
        print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
