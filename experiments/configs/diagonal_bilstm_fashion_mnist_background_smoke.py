r"""Tiny `diagonal_bilstm_fashion_mnist_background` for tests: 1 layer, h=4, embedded data.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=diagonal_bilstm_fashion_mnist_background_smoke \
    --workdir=/tmp/diagonal_bilstm_fashion_mnist_background_smoke

Paper: see `diagonal_bilstm_fashion_mnist_background`.
"""

from experiments.configs import base, diagonal_bilstm_fashion_mnist_background


def get_config():
    """Returns the locked config."""
    config = diagonal_bilstm_fashion_mnist_background.get_config()
    return base.make_smoke(config, data_name="embedded_mnist")
