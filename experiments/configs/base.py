"""Base config: every field the runner reads, with its default and why.

Named experiments (`row_lstm_mnist.py`, ...) import this file and override only what
differs; the `*_smoke` variants shrink a named experiment with `make_smoke`. The returned
ConfigDict is locked, so a misspelt override (`--config.train.batch_sise=8`) is an error
instead of a silently ignored key.

Not an experiment itself: run one of `python -m experiments.train --config=NAME`, NAME from
`experiments.configs.list_configs()`.
"""

import ml_collections

# Optimiser steps of every *_fashion_mnist run (batch 16: 3.5 epochs of the 55,000 training
# images); chosen so that the fastest of the three models trains for at least 45 minutes on
# the 2-core CPU (WORKSPACE_NOTES.md, "Fashion-MNIST").
FASHION_MNIST_STEPS = 12_000


def get_config() -> ml_collections.ConfigDict:
    """Returns the locked base config (a binarized-MNIST Row LSTM at the paper's sizes)."""
    config = ml_collections.ConfigDict()

    # Seeds parameter init, data shuffling and sampling; a run is a function of (config, seed).
    config.seed = 0
    # The paper's number for this experiment, printed next to the result a run reaches.
    config.paper_result = ""

    config.data = ml_collections.ConfigDict()
    # TFDS name: binarized_mnist, mnist, fashion_mnist, cifar10, downsampled_imagenet/32x32 or
    # /64x64, or an embedded offline set (embedded_binarized_mnist, embedded_mnist,
    # embedded_rgb32, embedded_rgb64). Labelled (for model.num_classes > 0): mnist,
    # fashion_mnist, cifar10, embedded_binarized_mnist, embedded_mnist.
    config.data.name = "binarized_mnist"
    # TFDS data directory; None means the TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    config.data.data_dir = ml_collections.config_dict.placeholder(str)
    # False: an unprepared real dataset falls back to the embedded set of the same kind, with a
    # loud warning that is also written to config.json. True: that is an error instead.
    config.data.strict = False
    # Training images only: each sub-pixel is replaced, with this probability, by a uniform
    # random level (mu of Ren et al. 2019's background model for a likelihood ratio,
    # `*_background` configs). 0 trains on the images as stored; evaluation never perturbs.
    config.data.perturb_rate = 0.0

    # The model contract of pixel_rnn_jax.models.build_model (see WORKSPACE_NOTES.md).
    config.model = ml_collections.ConfigDict()
    # 'pixelcnn', 'row_lstm', 'diagonal_bilstm', or 'multiscale' (see model.multiscale).
    config.model.name = "row_lstm"
    # Recurrent layers (Row LSTM / Diagonal BiLSTM) or residual blocks (PixelCNN).
    config.model.num_layers = 7
    # h: LSTM state features; every layer's input/output map has 2h features (paper sec. 3.4).
    config.model.hidden_dim = 16
    # 2 (Bernoulli / sigmoid head, binarized MNIST) or 256 (softmax per colour channel).
    config.model.num_levels = 2
    # 1 (grey) or 3 (RGB, with the R/G/B mask groups).
    config.model.num_channels = 1
    # Recurrence driver: a positive integer (lax.scan unroll factor), 'full' or 'python'.
    # Typed `object` so that `--config.model.unroll=4`, `=full` and `=python` all parse, and
    # code may assign an int or a string.
    config.model.unroll = ml_collections.FieldReference(1, field_type=object)
    # Diagonal BiLSTM only: False is the paper's design (see REFERENCE.md's known subtlety);
    # True adds context so that every earlier pixel is visible.
    config.model.full_context = False
    # First layer: k x k convolution with mask A (paper Table 1: 7x7).
    config.model.first_kernel_size = 7
    # Row LSTM state-to-state / input-to-state kernel length along the row (paper: k = 3).
    config.model.recurrent_kernel_size = 3
    # Features of the two ReLU + 1x1 masked output convolutions (paper does not give it).
    config.model.output_dim = 32
    # Residual connections around each recurrent layer / block (paper sec. 3.4).
    config.model.use_residual = True
    # Learnable skip connections from every layer to the output stack (paper sec. 3.4).
    config.model.use_skip = True
    # 0: unconditional p(x). > 0: class-conditional p(x | y) on a labelled dataset with that
    # many classes (mnist, cifar10, embedded_binarized_mnist): every layer adds a learned
    # embedding of the label to its input-to-state pre-activations (Gated PixelCNN style).
    config.model.num_classes = 0
    # Compute dtype of every convolution and matmul: 'float32' or 'bfloat16' (the
    # accelerators' fast path). Parameters and optimiser state stay float32 (checkpoints do
    # not depend on it), and so do the LSTM cell states, the gate nonlinearities, the logits,
    # the log-softmax and the likelihood. On a CPU bfloat16 is emulated: slower, not faster.
    config.model.dtype = "float32"
    # Rematerialisation: each body unit under nn.remat (jax.checkpoint) keeps only its input
    # for the backward pass and recomputes the rest, trading compute for activation memory
    # (see `python -m experiments.model_summary` for what fits). Same parameter tree.
    config.model.remat = False
    # How the recurrences are laid out, never what they compute or their parameters:
    # 'throughput' (one loop per layer and direction, the layout XLA:CPU runs fastest),
    # 'latency' (the fewest sequential steps: the Row LSTM's layers in one scan over rows,
    # the Diagonal BiLSTM's directions in one loop; for accelerators, where every loop step
    # costs launches) or 'auto' (per backend, model kind and h: `recurrence.AUTO_SCHEDULE`).
    config.model.schedule = "auto"
    # Multi-Scale PixelRNN only (model.name = 'multiscale', pixel_rnn_jax/multiscale.py);
    # ignored by the other models. The conditional network uses the model fields above.
    config.model.multiscale = ml_collections.ConfigDict()
    # f: the small image is the subsample x[::f, ::f] (64x64 -> 32x32 for f = 2).
    config.model.multiscale.factor = 2
    # Body of the conditional network: 'row_lstm', 'diagonal_bilstm' or 'pixelcnn'.
    config.model.multiscale.conditional_name = "row_lstm"
    # c: features of the upsampled small-image map; an unmasked 1x1 of it is added to the
    # input-to-state map of every conditional layer (paper sec. 3.5).
    config.model.multiscale.cond_dim = 32
    # Unmasked 3x3 ReLU convolutions encoding the small image before the f x f deconvolution.
    config.model.multiscale.encoder_layers = 2
    # The unconditional small-image network; its other fields are the model fields above.
    config.model.multiscale.small = ml_collections.ConfigDict()
    config.model.multiscale.small.name = "row_lstm"  # its body
    config.model.multiscale.small.num_layers = 7
    config.model.multiscale.small.hidden_dim = 16  # its h

    config.train = ml_collections.ConfigDict()
    # Global batch over all devices of all processes; must divide by the device count.
    # The paper uses 16 for MNIST and CIFAR-10.
    config.train.batch_size = 16
    # Optimiser updates in the whole run (a resumed run continues up to this number).
    config.train.num_steps = 100_000
    # 'rmsprop' (the paper's choice) or 'adam'.
    config.train.optimizer = "rmsprop"
    # Learning rate; the paper tuned it per dataset and does not give the values.
    config.train.learning_rate = 1e-3
    # Unset: the rate stays constant. A step in [0, num_steps - 1): the update from that step
    # runs at learning_rate, and the rate falls linearly so that the last update (from step
    # num_steps - 1) runs at learning_rate * lr_final_fraction. The optimiser state does not
    # depend on it, so a constant-rate run can be resumed with a larger num_steps and a decay.
    config.train.lr_decay_start = ml_collections.config_dict.placeholder(int)
    config.train.lr_final_fraction = 0.0
    # L2 weight penalty (lambda of Ren et al.'s background model): the loss is the mean NLL in
    # nats per image plus l2_weight * the sum of every squared parameter. 0 adds nothing (and
    # leaves the train step's program as it was); logged as train/l2_penalty when on.
    config.train.l2_weight = 0.0
    # RMSProp moving-average decay of the squared gradient (Torch's alpha is 0.99).
    config.train.rmsprop_decay = 0.95
    # RMSProp / Adam epsilon, added outside the square root as in Torch's RMSProp.
    config.train.eps = 1e-8
    # Global-norm gradient clipping threshold (of the mean NLL in nats/image); 0 disables it.
    config.train.grad_clip_norm = 100.0
    # Log a train line (and a metrics.jsonl row) every this many steps.
    config.train.log_every = 100
    # Evaluate on the whole test split and write sample grids every this many steps
    # (and at the end); 0 means only at the end.
    config.train.eval_every = 5_000
    # Save a checkpoint every this many steps (and at the end, and on SIGTERM).
    config.train.checkpoint_every = 5_000
    # Keep this many most recent checkpoints, plus the best one by eval NLL.
    config.train.keep_checkpoints = 3
    # When every checkpoint in the workdir is unreadable, move them all to
    # workdir/checkpoints_corrupt/ and train from step 0 instead of refusing to start. Off by
    # default so that a damaged disk never silently restarts a long run; readable checkpoints
    # are always resumed from, whatever this says.
    config.train.start_fresh = False
    # Global batch for evaluation (the last batch is padded and masked).
    config.train.eval_batch_size = 64
    # Evaluate on at most this many test batches; 0 means the whole test split.
    config.train.eval_max_batches = 0
    # Samples drawn at each evaluation and at the end (a square-ish PNG grid); also the number
    # of test images completed from their top half. 0 disables sampling during training.
    config.train.num_samples = 16
    # 'cached' (each layer's states cached: only what a new sub-pixel changes is recomputed;
    # identical draws, speed in WORKSPACE_NOTES.md) or 'naive' (one full forward pass per
    # sub-pixel, the reference).
    config.train.sample_method = "cached"
    # Softmax / sigmoid temperature of the samples (1.0 samples the model's distribution).
    config.train.sample_temperature = 1.0
    # The PNG grids show every image pixel as an image_scale x image_scale block (nearest
    # neighbour), so that a grid of 28x28 digits is readable; separators stay 1 pixel.
    config.train.image_scale = 4

    config.lock()
    return config


def make_class_conditional(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns a named binarized-MNIST experiment into its class-conditional p(x | digit).

    `binarized_mnist` has no labels, so the conditional runs train on the labelled `mnist`
    (binarized at load with a fixed seed). No class-conditional PixelRNN number is
    published: `paper_result` keeps the unconditional one, saying so.

    Returns:
      The same config object, conditioned on the ten digit classes.
    """
    config.data.name = "mnist"  # labelled; binarized at load (binarized_mnist has no labels)
    config.model.num_classes = 10  # the ten digits
    config.train.num_samples = 100  # sample grids: one row of 10 per class
    config.paper_result = (
        f"no class-conditional PixelRNN number is published; unconditional {config.paper_result}"
    )
    return config


def make_fashion_mnist(
    config: ml_collections.ConfigDict, model_name: str
) -> ml_collections.ConfigDict:
    """Turns the base config into a Fashion-MNIST experiment of one model kind.

    The choices the three `*_fashion_mnist` configs share, and why:
    - data: `fashion_mnist` (prepare it once with `python -m experiments.prepare_data
      --dataset=fashion_mnist --source=/usr/share/datasets/fashion-mnist` after `apt-get
      install dataset-fashion-mnist`); unprepared, it falls back loudly to the embedded
      256-level MNIST digits unless `--config.data.strict=True`.
    - head: one channel, 256 levels, the paper's 256-way softmax per pixel.
    - sizes: 7 layers as the MNIST models (PixelCNN overrides its depth), h=32 and a 64-wide
      output stack (the MNIST models' h=16 and 32-wide stack are small for 256 levels; h=32
      keeps a run to about an hour on a 2-core CPU).
    - training: RMSProp 1e-3, batch 16, `FASHION_MNIST_STEPS` for all three, so that they
      compare at equal steps; checkpoints are selected on the last 5,000 training images
      (`train[-5000:]`, never trained on) and the number reported is the selected
      checkpoint's on the official 10,000-image test split.
    - paper: no PixelRNN result on Fashion-MNIST is published; `paper_result` quotes the
      classical lossless codecs on the same test images (a bits/dim is a compression rate).

    Returns:
      The same config object.
    """
    config.data.name = "fashion_mnist"
    config.model.name = model_name
    config.model.num_levels = 256  # the paper's natural-image head, one channel
    config.model.num_channels = 1
    config.model.num_layers = 7
    config.model.hidden_dim = 32
    config.model.output_dim = 64
    config.train.num_steps = FASHION_MNIST_STEPS
    config.train.eval_every = 2_000  # on the 5,000 validation images: selects "best"
    config.train.checkpoint_every = 2_000
    config.paper_result = (
        "no published PixelRNN number on Fashion-MNIST; classical lossless codecs on its test "
        "images (per-image files): PNG 5.19, WebP 4.56, JPEG-XL 4.30 bits/dim (measured here)"
    )
    return config


def make_smoke(config: ml_collections.ConfigDict, data_name: str) -> ml_collections.ConfigDict:
    """Shrinks a named experiment to a seconds-long run on an embedded dataset (for tests).

    Args:
      config: a named experiment's config (locked; overrides must name existing fields).
      data_name: the embedded dataset of the same image kind as the experiment.

    Returns:
      The same config object, shrunk: 1 layer, h=4, batch 4, a handful of steps.
    """
    config.data.name = data_name
    config.data.strict = True  # Smoke runs use embedded data: a fallback would hide a bug.
    config.model.num_layers = 1
    config.model.hidden_dim = 4
    config.model.output_dim = 8
    config.model.first_kernel_size = 3  # A 7x7 first layer only slows compilation here.
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.checkpoint_every = 2
    config.train.keep_checkpoints = 2
    config.train.eval_batch_size = 8
    config.train.eval_max_batches = 2
    config.train.num_samples = 2
    return config
