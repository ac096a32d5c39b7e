r"""NLL of a trained run: `python -m experiments.evaluate --config=NAME --workdir=DIR`.

Reports nats/image and bits/dim over a whole split (`--split`, default the split the paper
reports: test, or validation for ImageNet) for the latest checkpoint, or with --which=best
the one the run selected (lowest NLL on its validation split where the dataset has one).
For a class-conditional run (`model.num_classes > 0`) it is the conditional NLL -log p(x | y),
each image given its own label. Reads checkpoints without changing anything, so it is safe
next to a running training job.
"""

import json

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory. Default ./workdirs/<config>.")
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Which checkpoint.")
_SPLIT = flags.DEFINE_string(
    "split", None, "Dataset split to evaluate (e.g. validation); default the reported one."
)
flags.mark_flags_as_required(["config"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from pixel_rnn_jax import metric_logging, train

    metric_logging.quiet_library_info_logs()
    name, workdir = configs.flag_run_dirs(_WORKDIR.value)
    result = train.evaluate_checkpoint(_CONFIG.value, workdir, _WHICH.value, _SPLIT.value)
    num_classes = _CONFIG.value.model.num_classes
    kind = f" -log p(x | y) ({num_classes} classes)" if num_classes else ""
    print(
        f"{name} {_WHICH.value} checkpoint (step {result['step']}) in {workdir}: "
        f"{result['split']} NLL{kind} {result['eval/nll']:.3f} nats/image, "
        f"{result['eval/bits_per_dim']:.4f} bits/dim over {result['eval/num_images']} "
        f"{result['split']} images."
    )
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
