r"""Tiny `multiscale_imagenet64` for tests: 1 layer per part, h=4, 4 steps on `embedded_rgb64`.

Run (seconds on a laptop CPU, plus about a minute of naive sampling; numbers mean nothing):
  python -m experiments.train --config=multiscale_imagenet64_smoke \
    --workdir=/tmp/multiscale_imagenet64_smoke

Paper: see `multiscale_imagenet64`.
"""

from experiments.configs import base, multiscale_imagenet64


def get_config():
    """Returns the locked config."""
    config = base.make_smoke(multiscale_imagenet64.get_config(), data_name="embedded_rgb64")
    config.model.multiscale.cond_dim = 4
    config.model.multiscale.encoder_layers = 1
    config.model.multiscale.small.num_layers = 1
    config.model.multiscale.small.hidden_dim = 4
    config.train.num_samples = 1  # naive sampling at 64x64: one sample and one completion
    return config
