"""Row LSTM on downsampled ImageNet 32x32, 12 layers, h=128, 256-way softmax per colour.

Run:
  python -m experiments.train --config=row_lstm_imagenet32

Paper (van den Oord et al. 2016, Table 6): PixelRNN 3.86 bits/dim validation (3.83 train).
Sizes and batch are unconfirmed: the CIFAR-10 model's 12 layers and h=128, batch 64 (the
paper only says ImageNet used larger batches than MNIST/CIFAR-10).

Needs `downsampled_imagenet/32x32` prepared in the TFDS data dir (it cannot be downloaded
here); otherwise it falls back to the embedded RGB set (a loud warning, also in config.json)
unless `--config.data.strict=True`.
"""

from experiments.configs import row_lstm_cifar10


def get_config():
    """Returns the locked config."""
    config = row_lstm_cifar10.get_config()
    config.data.name = "downsampled_imagenet/32x32"
    config.paper_result = "PixelRNN, ImageNet 32x32: 3.86 bits/dim validation (paper)"
    config.train.batch_size = 64  # unconfirmed
    config.train.num_steps = 1_000_000  # ~50 epochs of 1.28M images (our choice).
    config.train.eval_every = 20_000
    config.train.checkpoint_every = 5_000
    config.train.eval_max_batches = 200  # 12,800 of the 50k validation images per eval.
    return config
