r"""Tiny `pixelcnn_cifar10` for tests: 1 layer, h=4, batch 4, 4 steps on `embedded_rgb32`.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=pixelcnn_cifar10_smoke \
    --workdir=/tmp/pixelcnn_cifar10_smoke

Paper: see `pixelcnn_cifar10`.
"""

from experiments.configs import base, pixelcnn_cifar10


def get_config():
    """Returns the locked config."""
    return base.make_smoke(pixelcnn_cifar10.get_config(), data_name="embedded_rgb32")
