r"""Tiny `row_lstm_fashion_mnist_conditional` for tests: 1 layer, h=4, on `embedded_mnist`.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=row_lstm_fashion_mnist_conditional_smoke \
    --workdir=/tmp/row_lstm_fashion_mnist_conditional_smoke

Paper: see `row_lstm_fashion_mnist_conditional`.
"""

from experiments.configs import base, row_lstm_fashion_mnist_conditional


def get_config():
    """Returns the locked config."""
    config = base.make_smoke(
        row_lstm_fashion_mnist_conditional.get_config(), data_name="embedded_mnist"
    )
    config.train.num_samples = 10  # one per class
    return config
