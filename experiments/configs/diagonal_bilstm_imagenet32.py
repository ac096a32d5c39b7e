"""Diagonal BiLSTM on downsampled ImageNet 32x32, 12 layers, h=128.

Run:
  python -m experiments.train --config=diagonal_bilstm_imagenet32

Paper (van den Oord et al. 2016, Table 6): PixelRNN 3.86 bits/dim validation (3.83 train).
Sizes and batch are unconfirmed (see row_lstm_imagenet32).

Needs `downsampled_imagenet/32x32` prepared in the TFDS data dir (it cannot be downloaded
here); otherwise it falls back to the embedded RGB set (a loud warning, also in config.json)
unless `--config.data.strict=True`.
"""

from experiments.configs import row_lstm_imagenet32


def get_config():
    """Returns the locked config."""
    config = row_lstm_imagenet32.get_config()
    config.model.name = "diagonal_bilstm"
    config.paper_result = "PixelRNN, ImageNet 32x32: 3.86 bits/dim validation (paper)"
    return config
