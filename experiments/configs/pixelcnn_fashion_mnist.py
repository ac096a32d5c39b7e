"""PixelCNN on Fashion-MNIST: 28x28 greyscale, 256 levels, a 256-way softmax per pixel.

Run (after preparing `fashion_mnist`, see `base.make_fashion_mnist`):
  python -m experiments.train --config=pixelcnn_fashion_mnist

Depth: 15 residual blocks, the paper's PixelCNN depth: a 7-block stack of 3x3 convolutions
sees only about 10 rows up, and a block costs far less than an LSTM layer.

Data, sizes, training length and model selection are shared with the other two
`*_fashion_mnist` configs and justified in `base.make_fashion_mnist`.

Paper: no PixelRNN result on Fashion-MNIST is published (see `base.make_fashion_mnist`).
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.make_fashion_mnist(base.get_config(), "pixelcnn")
    config.model.num_layers = 15  # the paper's PixelCNN depth (CIFAR-10); see the docstring
    return config
