"""PixelCNN on Fashion-MNIST: 28x28 greyscale, 256 levels, a 256-way softmax per pixel.

Prepare the data once (Debian's package, or Zalando's files in any directory):
  sudo apt-get install dataset-fashion-mnist
  python -m experiments.prepare_data --dataset=fashion_mnist \\
    --source=/usr/share/datasets/fashion-mnist
Run:
  python -m experiments.train --config=pixelcnn_fashion_mnist

Sizes: 15 residual blocks (the paper's PixelCNN depth: a 7-block stack of 3x3 convolutions
sees only about 10 rows up, and a block costs far less than an LSTM layer), h=32 and a
64-wide output stack as the two LSTM models. RMSProp at 1e-3, batch 16, 12,000 steps for
each of the three Fashion-MNIST models, so that they compare at equal steps; checkpoints are
selected on the last 5,000 training images (`train[-5000:]`, never trained on) and the
number reported is the selected checkpoint's on the official 10,000-image test split.

Paper: no PixelRNN result on Fashion-MNIST is published; `paper_result` quotes the classical
lossless codecs on the same test images instead (a model's bits/dim is a compression rate).
Without a prepared `fashion_mnist` this falls back to the embedded 256-level MNIST digits (a
loud warning, also in config.json) unless `--config.data.strict=True`.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.make_fashion_mnist(base.get_config(), "pixelcnn")
    config.model.num_layers = 15  # the paper's PixelCNN depth (CIFAR-10); see the docstring
    return config
