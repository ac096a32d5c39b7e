r"""Lossless compression with a trained run: one .prnn file per image.

  python -m experiments.compress --config=NAME --workdir=DIR [--which=best|latest] \
      (--split=test --num=N | --images='PATTERN') --output=OUT [--overwrite]

Each image is entropy-coded under the model's conditionals (the cached walk, quantised to
integer frequencies, through constriction's range coder), so a file's size is the model's
NLL of the image plus a few bytes of header. Writes OUT/<name>.prnn per image (names
`<split>_<index>` or the PNGs' own) and OUT/report.json: per file its name, size in bytes and
the model's NLL in bits, and the totals. `--images` takes PNG files of the model's image
shape and levels (0/255 for binary models); a class-conditional model also needs `--label`.
Decode with `python -m experiments.decompress` and the same --config, --workdir, --which.
"""

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory. Default ./workdirs/<config>.")
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Which checkpoint.")
_SPLIT = flags.DEFINE_string("split", None, "Compress images of this dataset split (e.g. test).")
_NUM = flags.DEFINE_integer("num", None, "With --split: the first N images (default: all).")
_IMAGES = flags.DEFINE_string("images", None, "Compress these PNG files (a glob pattern).")
_LABEL = flags.DEFINE_integer(
    "label", None, "With --images, class-conditional models only: the images' class."
)
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the .prnn files and report.json.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace files of the same names in --output.")
flags.mark_flags_as_required(["config", "output"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if (_SPLIT.value is None) == (_IMAGES.value is None):
        raise app.UsageError("Give either --split (with --num) or --images, not both or neither.")
    import numpy as np

    from pixel_rnn_jax import coding, errors, metric_logging, train
    from pixel_rnn_jax.coding import files

    metric_logging.quiet_library_info_logs()
    name, workdir = configs.flag_run_dirs(_WORKDIR.value)
    config = _CONFIG.value
    num_classes = config.model.num_classes
    if _IMAGES.value is not None and num_classes and _LABEL.value is None:
        raise errors.ConfigError(
            f"The model is class-conditional ({num_classes} classes): give the images' class "
            "with --label=K."
        )
    label = _LABEL.value
    if label is not None and not num_classes:
        raise errors.ConfigError("The model is unconditional: drop --label.")
    if label is not None and (_SPLIT.value is not None or not 0 <= label < num_classes):
        raise errors.ConfigError(
            f"--label goes with --images only, a class in [0, {num_classes}); got {label}."
        )
    loaded = train.load_checkpoint(config, workdir, _WHICH.value)
    if _SPLIT.value is not None:
        images, labels = train.split_images(config, loaded.spec, _SPLIT.value, _NUM.value)
        names = [f"{_SPLIT.value}_{index:05d}" for index in range(len(images))]
    else:
        images, names = files.read_pngs(
            _IMAGES.value, loaded.spec.image_shape, loaded.spec.num_levels
        )
        labels = np.full(len(images), label) if num_classes else None
    variables = {"params": loaded.params}
    fingerprint = coding.fingerprint(config.model, loaded.params)
    info = {"config": name, "workdir": workdir, "which": _WHICH.value, "step": loaded.step}
    report = files.compress_to_directory(
        loaded.model,
        variables,
        fingerprint,
        np.asarray(images, np.int32),
        names,
        _OUTPUT.value,
        image_shape=loaded.spec.image_shape,
        labels=labels,
        overwrite=_OVERWRITE.value,
        info=info,
    )
    totals = report["totals"]
    print(
        f"{totals['files']} files, {totals['bytes']} bytes in {_OUTPUT.value}: "
        f"{totals['bits_per_dim']:.4f} bits/dim ({totals['payload_bits_per_dim']:.4f} without "
        f"headers; model NLL {totals['nll_bits_per_dim']:.4f})"
    )


if __name__ == "__main__":
    cli.run(main)
