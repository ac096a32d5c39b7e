"""Diagonal BiLSTM on binarized MNIST, 7 layers, h=16 (the paper's MNIST model).

Run:
  python -m experiments.train --config=diagonal_bilstm_mnist

Paper (van den Oord et al. 2016, Table 4): 79.20 nats test NLL (7 layers, h=16); a 1-layer
h=32 Diagonal BiLSTM gets 80.75.

Without a prepared `binarized_mnist` in the TFDS data dir, this falls back to the embedded
5,000-digit set (a loud warning, also in config.json): numbers on it are not comparable.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.get_config()
    config.model.name = "diagonal_bilstm"
    config.paper_result = (
        "Diagonal BiLSTM 7 layers h=16, binarized MNIST: 79.20 nats/image test NLL (paper)"
    )
    config.train.num_steps = 150_000  # ~40 epochs of 60k images at batch 16 (our choice).
    return config
