r"""Tiny `pixelcnn_fashion_mnist` for tests: 1 layer, h=4, batch 4, 4 steps on `embedded_mnist`.

Run (seconds on a laptop CPU; numbers mean nothing):
  python -m experiments.train --config=pixelcnn_fashion_mnist_smoke \
    --workdir=/tmp/pixelcnn_fashion_mnist_smoke

Paper: see `pixelcnn_fashion_mnist`.
"""

from experiments.configs import base, pixelcnn_fashion_mnist


def get_config():
    """Returns the locked config."""
    return base.make_smoke(pixelcnn_fashion_mnist.get_config(), data_name="embedded_mnist")
