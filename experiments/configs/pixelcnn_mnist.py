"""PixelCNN on binarized MNIST, 7 residual blocks of masked 3x3 convolutions, h=16.

Run:
  python -m experiments.train --config=pixelcnn_mnist

Paper (van den Oord et al. 2016, Table 4): PixelCNN 81.30 nats test NLL. The depth and width
are not given for MNIST; 7 blocks at h=16 mirror the MNIST Diagonal BiLSTM (unconfirmed).

Without a prepared `binarized_mnist` in the TFDS data dir, this falls back to the embedded
5,000-digit set (a loud warning, also in config.json): numbers on it are not comparable.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.get_config()
    config.model.name = "pixelcnn"
    config.paper_result = "PixelCNN, binarized MNIST: 81.30 nats/image test NLL (paper)"
    config.train.num_steps = 150_000  # ~40 epochs of 60k images at batch 16 (our choice).
    return config
