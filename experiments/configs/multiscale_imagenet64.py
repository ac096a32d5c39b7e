"""Multi-Scale PixelRNN on downsampled ImageNet 64x64: a 32x32 Row LSTM, then 64x64 given it.

Run:
  python -m experiments.train --config=multiscale_imagenet64

Paper (van den Oord et al. 2016, Table 6): PixelRNN, ImageNet 64x64: 3.63 bits/dim
validation (3.57 train). The paper shows multi-scale 64x64 samples next to single-scale ones
(Figure 7) and, as far as we know, says both reach about the same log-likelihood without a
separate number for the multi-scale model (unconfirmed).

The small image is the subsample x[::2, ::2] (32x32), modelled by the `row_lstm_imagenet32`
network (12 layers, h=128); the conditional network is the same stack at 64x64 with an
unmasked 1x1 of the upsampled small image added to every layer's input-to-state map. Both
are trained in one run on the joint loss, which is the sum of the two parts' losses (see
pixel_rnn_jax/multiscale.py); bits/dim are of the full 64x64x3 image. Sizes and batch are
unconfirmed (the paper gives neither for this model); cond_dim and encoder_layers are ours.

Needs `downsampled_imagenet/64x64` prepared in the TFDS data dir (it cannot be downloaded
here); otherwise it falls back to the embedded 64x64 RGB set `embedded_rgb64` (a loud
warning, also in config.json) unless `--config.data.strict=True`.
"""

from experiments.configs import row_lstm_imagenet32


def get_config():
    """Returns the locked config."""
    config = row_lstm_imagenet32.get_config()
    config.data.name = "downsampled_imagenet/64x64"
    config.paper_result = "PixelRNN, ImageNet 64x64: 3.63 bits/dim validation (paper)"
    config.model.name = "multiscale"
    # The conditional 64x64 network: the top-level fields (12 layers, h=128, as for 32x32).
    config.model.multiscale.conditional_name = "row_lstm"
    config.model.multiscale.factor = 2  # 64x64 -> 32x32
    config.model.multiscale.cond_dim = 128  # our choice (the paper's c is not given)
    config.model.multiscale.encoder_layers = 2  # our choice
    # The unconditional 32x32 network: the row_lstm_imagenet32 model.
    config.model.multiscale.small.name = "row_lstm"
    config.model.multiscale.small.num_layers = 12
    config.model.multiscale.small.hidden_dim = 128
    # Naive sampling of the conditional part reruns the 64x64 network for each of the 9,216
    # positions off the grid: keep the grids small.
    config.train.num_samples = 8
    return config
