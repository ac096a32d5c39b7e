"""Row LSTM on CIFAR-10, 12 layers, h=128, 256-way softmax per colour.

Run:
  python -m experiments.train --config=row_lstm_cifar10

Paper (van den Oord et al. 2016, Table 5): 3.07 bits/dim test (3.00 train, unconfirmed);
the 12-layer ablation (Table 3) gets 3.06 bits/dim on validation with residual + skip.
Sizes: 12 layers from the paper's ablation; h=128 is unconfirmed.

Needs `cifar10` prepared in the TFDS data dir; otherwise it falls back to the embedded RGB
set (a loud warning, also in config.json) unless `--config.data.strict=True`.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.get_config()
    config.data.name = "cifar10"
    config.model.name = "row_lstm"
    config.paper_result = "Row LSTM, CIFAR-10: 3.07 bits/dim test (paper)"
    config.model.num_layers = 12
    config.model.hidden_dim = 128  # unconfirmed
    config.model.num_levels = 256
    config.model.num_channels = 3
    config.model.output_dim = 1024  # not given in the paper; a common choice for 256-way heads
    config.train.num_steps = 500_000  # ~160 epochs of 50k images at batch 16 (our choice).
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 5_000
    return config
