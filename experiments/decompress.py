r"""Decodes .prnn files of `experiments.compress` back to PNG files, pixel for pixel.

  python -m experiments.decompress --config=NAME --workdir=DIR [--which=best|latest] \
      --input=FILE_OR_DIR --output=OUT [--overwrite]

Needs the same --config, --workdir and --which as the compression: a file made by another
model, config or checkpoint is refused before decoding (both fingerprints named). Writes
OUT/<name>.png per file (binary images as 0/255) and, for a class-conditional model,
OUT/labels.json. A directory with bad files (truncated, damaged, another model's) decodes
the others, then lists the bad ones and exits with status 1.
"""

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory. Default ./workdirs/<config>.")
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Which checkpoint.")
_INPUT = flags.DEFINE_string("input", None, "A .prnn file, or a directory of them.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the PNG files.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace files of the same names in --output.")
flags.mark_flags_as_required(["config", "input", "output"])
flags.declare_key_flag("config")  # defined in experiments.configs; list it in --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from pixel_rnn_jax import coding, metric_logging, train
    from pixel_rnn_jax.coding import files

    metric_logging.quiet_library_info_logs()
    _, workdir = configs.flag_run_dirs(_WORKDIR.value)
    inputs = files.input_files(_INPUT.value)  # before restoring: a wrong path fails fast
    loaded = train.load_checkpoint(_CONFIG.value, workdir, _WHICH.value)
    written = files.decompress_to_directory(
        loaded.model,
        {"params": loaded.params},
        coding.fingerprint(_CONFIG.value.model, loaded.params),
        inputs,
        _OUTPUT.value,
        overwrite=_OVERWRITE.value,
        image_shape=loaded.spec.image_shape,
    )
    print(f"{len(written)} images written to {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
