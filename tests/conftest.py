"""Test-session set-up shared by every test file.

Tests never touch the user's ~/tensorflow_datasets: runs that leave `data.data_dir` unset
prepare the embedded datasets into a per-session temporary TFDS directory instead. This must
happen before TensorFlow Datasets is imported (it reads TFDS_DATA_DIR once, at import).
"""

import os
import tempfile

os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="pixel_rnn_jax_tfds_"))
