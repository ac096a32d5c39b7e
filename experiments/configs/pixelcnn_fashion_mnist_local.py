"""A local model of Fashion-MNIST: a PixelCNN that sees only a few pixels around each pixel.

The reference of this project's own out-of-distribution score (`experiments.ood`, score
`local`): -log2 p_main(x) + log2 p_local(x), the bits the main model needs beyond what
local texture alone predicts. A lossless compressor's size (Serra et al.'s input complexity)
measures the same thing crudely; this model is learned from the same training images, in the
same family and with the same likelihood code, and uses no outlier data.

Receptive field: a 5x5 mask-A first layer and one 3x3 mask-B block see 3 rows up and 3
columns to each side (all within the causal half-plane), against the whole past for the
Diagonal BiLSTM. Everything else as `pixelcnn_fashion_mnist` (data, head, h=32, optimiser,
validation selection); it trains in minutes.

Run (after preparing `fashion_mnist`, see `base.make_fashion_mnist`):
  python -m experiments.train --config=pixelcnn_fashion_mnist_local \
    --config.data.strict=True --workdir=/root/runs/pixelcnn_fashion_mnist_local

Paper: no PixelRNN number; a likelihood reference for `experiments.ood`, not a model to report.
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.make_fashion_mnist(base.get_config(), "pixelcnn")
    config.model.first_kernel_size = 5
    config.model.num_layers = 1
    config.train.num_steps = 6_000
    config.paper_result = "a local reference model for experiments.ood: no published number"
    return config
