r"""Tiny `diagonal_bilstm_fashion_mnist` for tests: 1 layer, h=4, batch 4, 4 steps, embedded.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=diagonal_bilstm_fashion_mnist_smoke \
    --workdir=/tmp/diagonal_bilstm_fashion_mnist_smoke

Paper: see `diagonal_bilstm_fashion_mnist`.
"""

from experiments.configs import base, diagonal_bilstm_fashion_mnist


def get_config():
    """Returns the locked config."""
    return base.make_smoke(diagonal_bilstm_fashion_mnist.get_config(), data_name="embedded_mnist")
