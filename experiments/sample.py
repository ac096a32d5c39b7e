r"""Samples from a trained run: `python -m experiments.sample --config=NAME --workdir=DIR`.

Writes a PNG grid and an .npz of `--num` samples (integer images [num, H, W, C]) and, with
--complete, of completions of the first --num test images from their top half (each panel:
given half | completion | original). Files go to --out (default <workdir>/samples).

The sampler is `--config.train.sample_method=cached` (default; exact against `naive`, which
reruns the network per sub-pixel) at `--config.train.sample_temperature=1.0`.

Class-conditional runs (`model.num_classes > 0`): `--label=3` draws every sample from class
3; `--label=all` (the default for them) writes a grid with one row per class of
ceil(--num / num_classes) samples; completions are given their test images' own labels.
"""

import os

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory. Default ./workdirs/<config>.")
_OUT = flags.DEFINE_string("out", None, "Output directory. Default <workdir>/samples.")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples (and of completions).")
_COMPLETE = flags.DEFINE_bool("complete", False, "Also complete test images from their top half.")
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Which checkpoint.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_LABEL = flags.DEFINE_string(
    "label",
    None,
    "Class-conditional models only: a class in [0, model.num_classes) to sample, or 'all' "
    "for one row per class (the default for them). An error for an unconditional model.",
)
flags.mark_flags_as_required(["config"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from pixel_rnn_jax import metric_logging, train

    metric_logging.quiet_library_info_logs()
    name, workdir = configs.flag_run_dirs(_WORKDIR.value)
    label = _LABEL.value
    if label is not None and label != "all":
        try:
            label = int(label)
        except ValueError:
            message = f"--label must be a class number or 'all', got {label!r}."
            raise app.UsageError(message) from None
    paths = train.sample_checkpoint(
        _CONFIG.value,
        workdir,
        _OUT.value or os.path.join(workdir, "samples"),
        num=_NUM.value,
        complete=_COMPLETE.value,
        which=_WHICH.value,
        seed=_SEED.value,
        label=label,
    )
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    cli.run(main)
