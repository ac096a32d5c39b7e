"""Row LSTM on Fashion-MNIST: 28x28 greyscale, 256 levels, a 256-way softmax per pixel.

Run (after preparing `fashion_mnist`, see `base.make_fashion_mnist`):
  python -m experiments.train --config=row_lstm_fashion_mnist

Data, sizes, training length and model selection are shared with the other two
`*_fashion_mnist` configs and justified in `base.make_fashion_mnist`.

Paper: no PixelRNN result on Fashion-MNIST is published (see `base.make_fashion_mnist`).
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    return base.make_fashion_mnist(base.get_config(), "row_lstm")
