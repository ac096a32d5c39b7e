r"""A finished run into benchmark_results/: `python -m experiments.summarise --workdir=RUN
--output=benchmark_results/fashion_mnist/NAME`.

Writes the curve (Markdown table and matplotlib picture), the final metrics row and the last
sample and completion grids (`experiments.run_summary.write_summary`). Reads the workdir only.
"""

from absl import app, flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory (with metrics.jsonl).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the summary files.")
_TITLE = flags.DEFINE_string("title", None, "Title of the curve (default: the output's name).")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from experiments import run_summary

    written = run_summary.write_summary(_WORKDIR.value, _OUTPUT.value, _TITLE.value)
    print(f"Wrote {', '.join(written)} in {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
