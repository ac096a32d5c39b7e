"""Class-conditional Row LSTM on Fashion-MNIST: p(x | clothing class), 256 levels.

Run (after preparing `fashion_mnist`, see `row_lstm_fashion_mnist`):
  python -m experiments.train --config=row_lstm_fashion_mnist_conditional
  python -m experiments.sample --config=row_lstm_fashion_mnist_conditional --label=all

The unconditional `row_lstm_fashion_mnist` with `model.num_classes = 10`: every Row LSTM
layer adds a learned embedding of the label to its input-to-state pre-activations, and the
reported test NLL is -log p(x | y), each test image given its own label. The label can gain
at most I(x; y) <= log2(10) = 3.32 bits per image, 0.004 bits/dim at 784 dims.

Paper: no PixelRNN result on Fashion-MNIST is published, conditional or not.
"""

from experiments.configs import row_lstm_fashion_mnist


def get_config():
    """Returns the locked config."""
    config = row_lstm_fashion_mnist.get_config()
    config.model.num_classes = 10  # the ten clothing classes
    config.train.num_samples = 100  # sample grids: one row of 10 per class
    return config
