"""Class-conditional Diagonal BiLSTM on MNIST, 7 layers, h=16: p(x | digit class).

Run:
  python -m experiments.train --config=diagonal_bilstm_mnist_conditional
Sample (a grid with one row per class, or one class):
  python -m experiments.sample --config=diagonal_bilstm_mnist_conditional --label=all
  python -m experiments.sample --config=diagonal_bilstm_mnist_conditional --label=3

Every Diagonal BiLSTM layer adds a learned embedding of the label to the input-to-state
gate pre-activations of both directions (the same at every pixel, so causality is
unchanged); the reported test NLL is the conditional -log p(x | y), each test image given
its own label. What the label can gain over an unconditional model is its information
about the image, I(x; y) <= H(y) = log 10 = 2.30 nats/image for ten balanced classes.

Data: `binarized_mnist` has no labels, so this trains on the labelled `mnist`, binarized
at load with a fixed seed (not the standard static binarization: not comparable with the
paper's numbers). Without a prepared `mnist` it falls back to the labelled embedded
5,000-digit set (a loud warning, also in config.json).

Paper: no class-conditional PixelRNN result is published; `paper_result` quotes the
unconditional Diagonal BiLSTM. Measured conditional vs unconditional NLLs: WORKSPACE_NOTES.md,
"Class-conditional models (issue 14)".
"""

from experiments.configs import base, diagonal_bilstm_mnist


def get_config():
    """Returns the locked config."""
    return base.make_class_conditional(diagonal_bilstm_mnist.get_config())
