r"""Tiny `diagonal_bilstm_imagenet32` for tests: 1 layer, h=4, batch 4, 4 steps on `embedded_rgb32`.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=diagonal_bilstm_imagenet32_smoke \
    --workdir=/tmp/diagonal_bilstm_imagenet32_smoke

Paper: see `diagonal_bilstm_imagenet32`.
"""

from experiments.configs import base, diagonal_bilstm_imagenet32


def get_config():
    """Returns the locked config."""
    return base.make_smoke(diagonal_bilstm_imagenet32.get_config(), data_name="embedded_rgb32")
