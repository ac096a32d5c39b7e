"""PixelCNN on CIFAR-10, 15 residual blocks of masked 3x3 convolutions, h=128.

Run:
  python -m experiments.train --config=pixelcnn_cifar10

Paper (van den Oord et al. 2016, Table 5): 3.14 bits/dim test (3.08 train).
Sizes: 15 layers from the paper's Table 1 note; h=128 is unconfirmed.

Needs `cifar10` prepared in the TFDS data dir; otherwise it falls back to the embedded RGB
set (a loud warning, also in config.json) unless `--config.data.strict=True`.
"""

from experiments.configs import row_lstm_cifar10


def get_config():
    """Returns the locked config."""
    config = row_lstm_cifar10.get_config()
    config.model.name = "pixelcnn"
    config.paper_result = "PixelCNN, CIFAR-10: 3.14 bits/dim test (paper)"
    config.model.num_layers = 15
    return config
