"""Row LSTM on binarized MNIST, 7 layers, h=16.

Run:
  python -m experiments.train --config=row_lstm_mnist

Paper (van den Oord et al. 2016, Table 4): Row LSTM 80.54 nats test NLL (unconfirmed; the
paper's MNIST table reports the Diagonal BiLSTM, 79.20 nats at 7 layers h=16). Layer count and
h are those of the paper's MNIST Diagonal BiLSTM (the Row LSTM's are unconfirmed).

Without a prepared `binarized_mnist` in the TFDS data dir, this falls back to the embedded
5,000-digit set (a loud warning, also in config.json): numbers on it are not comparable.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.get_config()
    config.model.name = "row_lstm"
    config.paper_result = (
        "Row LSTM, binarized MNIST: 80.54 nats/image test NLL (paper, unconfirmed)"
    )
    config.train.num_steps = 150_000  # ~40 epochs of 60k images at batch 16 (our choice).
    return config
