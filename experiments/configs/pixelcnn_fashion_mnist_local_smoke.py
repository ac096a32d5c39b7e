r"""Tiny `pixelcnn_fashion_mnist_local` for tests: h=4, embedded data.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=pixelcnn_fashion_mnist_local_smoke \
    --workdir=/tmp/pixelcnn_fashion_mnist_local_smoke

Paper: see `pixelcnn_fashion_mnist_local`.
"""

from experiments.configs import base, pixelcnn_fashion_mnist_local


def get_config():
    """Returns the locked config."""
    return base.make_smoke(pixelcnn_fashion_mnist_local.get_config(), data_name="embedded_mnist")
