r"""Test NLL of a trained run: `python -m experiments.evaluate --config=NAME --workdir=DIR`.

Reports nats/image and bits/dim over the whole test split for the latest checkpoint, or the
best one by eval NLL with --which=best. Reads checkpoints without changing anything, so it is
safe next to a running training job.
"""

import json

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory. Default ./workdirs/<config>.")
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Which checkpoint.")
flags.mark_flags_as_required(["config"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from pixel_rnn_jax import metric_logging, train

    metric_logging.quiet_library_info_logs()
    name, workdir = configs.flag_run_dirs(_WORKDIR.value)
    result = train.evaluate_checkpoint(_CONFIG.value, workdir, _WHICH.value)
    print(
        f"{name} {_WHICH.value} checkpoint (step {result['step']}) in {workdir}: test NLL "
        f"{result['eval/nll']:.3f} nats/image, {result['eval/bits_per_dim']:.4f} bits/dim "
        f"over {result['eval/num_images']} test images."
    )
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
