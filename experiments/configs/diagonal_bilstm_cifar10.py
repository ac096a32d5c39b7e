"""Diagonal BiLSTM on CIFAR-10, 12 layers, h=128, 256-way softmax per colour.

Run:
  python -m experiments.train --config=diagonal_bilstm_cifar10

Paper (van den Oord et al. 2016, Table 5): 3.00 bits/dim test (2.93 train).
Sizes: 12 layers as in the paper's CIFAR-10 models; h=128 is unconfirmed.

Needs `cifar10` prepared in the TFDS data dir; otherwise it falls back to the embedded RGB
set (a loud warning, also in config.json) unless `--config.data.strict=True`.
"""

from experiments.configs import row_lstm_cifar10


def get_config():
    """Returns the locked config."""
    config = row_lstm_cifar10.get_config()
    config.model.name = "diagonal_bilstm"
    config.paper_result = "Diagonal BiLSTM, CIFAR-10: 3.00 bits/dim test (paper)"
    return config
