"""A/B of the runner's train step in one process: `python -m experiments.ab ...`.

The variants' calls alternate (A, B, A, B, ...) and each is reported as the median of its
per-round ratio to the first, with quartiles (`experiments.benchmarks.ab` says why).

Examples:
  # the working tree against a git revision (its `pixel_rnn_jax` exported beside it)
  python -m experiments.ab --base=HEAD --models=row_lstm,diagonal_bilstm --rounds=30
  # compiler options of the same program (the first is the reference)
  python -m experiments.ab --models=row_lstm \\
      --compiler_options='{"O3": {"xla_backend_optimization_level": 3}, "O1": {}}'
  # the recurrences' schedules (config.model.schedule; the first is the reference)
  python -m experiments.ab --models=row_lstm,diagonal_bilstm --schedules=throughput,latency

Writes a JSON line per model to stdout, and the table to `--output` (Markdown) if given.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
import tempfile

from absl import flags, logging

from experiments import cli
from experiments.benchmarks import ab, scan

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["row_lstm"], "Models to compare.")
flags.DEFINE_integer("size", 28, "Image size (a key of the benchmark's sizes: 8, 28, 32, 64).")
flags.DEFINE_integer("rounds", 30, "Timed rounds; each round calls every variant once.")
flags.DEFINE_string("base", None, "A git revision: compare the working tree's package to it.")
flags.DEFINE_string(
    "compiler_options", None, "JSON: variant name -> XLA compiler options (the first: reference)."
)
flags.DEFINE_list(
    "schedules",
    None,
    "model.schedule values to compare (the first: reference), e.g. throughput,latency.",
)
flags.DEFINE_string("output", None, "Markdown file for the table (optional).")


def main(argv):
    del argv
    kinds = [FLAGS.base, FLAGS.compiler_options, FLAGS.schedules]
    if sum(kind is not None for kind in kinds) != 1:
        raise SystemExit(
            "Give exactly one of --base=REVISION, --compiler_options=JSON or --schedules=LIST."
        )
    size = scan.SIZES[FLAGS.size]
    command = "python -m experiments.ab " + shlex.join(sys.argv[1:])
    lines = [f"# A/B: {command}", "", f"- machine: {scan.machine_info()}", ""]
    lines += ["| model | variant | compile s | median ms | ratio to first (q25-q75) |"]
    lines += ["|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in FLAGS.models:
            if FLAGS.schedules is not None:
                variants = ab.schedule_variants(model_name, size, FLAGS.schedules)
            elif FLAGS.base is not None:
                repo = pathlib.Path(__file__).resolve().parents[1]
                variants = ab.revision_variants(
                    model_name, size, FLAGS.base, repo, pathlib.Path(workdir)
                )
            else:
                options = json.loads(FLAGS.compiler_options)
                variants = ab.compiler_option_variants(model_name, size, options)
            for variant in variants:
                logging.info(
                    "%s %s: compiled in %.1f s, first loss %.6f",
                    model_name,
                    variant.name,
                    variant.compile_s,
                    variant.first_loss,
                )
            rows = ab.summarize(ab.alternate(variants, FLAGS.rounds))
            compile_s = {variant.name: variant.compile_s for variant in variants}
            print(json.dumps({"model": model_name, "rows": rows, "compile_s": compile_s}))
            for row in rows:
                lines.append(
                    f"| {model_name} | {row['variant']} | {compile_s[row['variant']]:.1f} | "
                    f"{row['median_ms']:.1f} | {row['ratio_to_first']:.3f} "
                    f"({row['ratio_q25']:.3f}-{row['ratio_q75']:.3f}) |"
                )
    if FLAGS.output:
        pathlib.Path(FLAGS.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    cli.run(main)
