r"""Prepares one of the paper's datasets, without TensorFlow.

  python -m experiments.prepare_data --dataset=binarized_mnist --data_dir=~/tensorflow_datasets

Downloads the original files (or reads them from --source=DIR), checks their sizes and
SHA-256 against the checksums TFDS ships, and writes the TFDS layout
<data_dir>/<name>/<version>/ that `--config.data.data_dir=DIR` then reads. ImageNet needs a
login to download: fetch its tars by hand and pass --source=DIR. A failure prints one line
and exits with status 1; rerunning resumes a partial download and finishes the job.
"""

import sys

from absl import app, flags

from experiments import cli
from pixel_rnn_jax.data import prepare
from pixel_rnn_jax.data.download import PrepareError, RetryPolicy

_DATASET = flags.DEFINE_enum("dataset", None, sorted(prepare.RECIPES), "Dataset to prepare.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (the configs' data.data_dir). Default: TFDS's."
)
_SOURCE = flags.DEFINE_string(
    "source",
    None,
    "Where the original files are: unset = the official URLs TFDS uses; an http(s):// prefix "
    "= a mirror with the same file names; a directory = files downloaded by hand (offline).",
)
# Named as the command line has it (absl's own negation would be --noverify_...).
_NO_VERIFY = flags.DEFINE_bool(
    "no_verify_checksums",
    False,
    "Skip checking each file's size and SHA-256 (and the example counts) against TFDS's "
    "checksums: for mirrors or test fixtures that are not the official files.",
)
_TIMEOUT = flags.DEFINE_float("timeout", 30.0, "Seconds to wait for a connection or for data.")
_RETRIES = flags.DEFINE_integer("retries", 3, "Further attempts per file after a failed one.")
flags.mark_flags_as_required(["dataset"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        path = prepare.prepare_dataset(
            _DATASET.value,
            _DATA_DIR.value,
            source=_SOURCE.value or prepare.OFFICIAL,
            verify_checksums=not _NO_VERIFY.value,
            policy=RetryPolicy(timeout=_TIMEOUT.value, retries=_RETRIES.value),
        )
    except PrepareError as error:
        sys.exit(f"prepare_data: {error}")  # One line on stderr, status 1, no traceback.
    print(f"Prepared {_DATASET.value} in {path}")


if __name__ == "__main__":
    cli.run(main)
