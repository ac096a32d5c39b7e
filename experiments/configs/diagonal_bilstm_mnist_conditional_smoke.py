r"""Tiny `diagonal_bilstm_mnist_conditional` for tests: 1 layer, h=4, batch 4, 4 steps.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=diagonal_bilstm_mnist_conditional_smoke \
    --workdir=/tmp/diagonal_bilstm_mnist_conditional_smoke
  python -m experiments.sample --config=diagonal_bilstm_mnist_conditional_smoke \
    --workdir=/tmp/diagonal_bilstm_mnist_conditional_smoke --label=all

Trains on the labelled `embedded_binarized_mnist` (10 classes). Paper: see
`diagonal_bilstm_mnist_conditional`.
"""

from experiments.configs import base, diagonal_bilstm_mnist_conditional


def get_config():
    """Returns the locked config."""
    config = diagonal_bilstm_mnist_conditional.get_config()
    return base.make_smoke(config, data_name="embedded_binarized_mnist")
