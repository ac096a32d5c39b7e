"""Training, evaluation and checkpoint restoring: the runner behind `experiments.train`.

- `state`: the train state and the optimiser.
- `steps`: the pure per-device train/eval steps and their `shard_map` wrappers.
- `loop`: `train_and_evaluate`, the loop.
- `guards`: SIGTERM, NaN/inf, model-vs-data and shared-workdir checks.
- `grids`: sample and completion grids.
- `restore`: loading a checkpoint (and a split's images) for `evaluate`, `sample`, `compress`.
"""

from pixel_rnn_jax.train.guards import TrainingDivergedError
from pixel_rnn_jax.train.loop import train_and_evaluate
from pixel_rnn_jax.train.restore import (
    LoadedCheckpoint,
    evaluate_checkpoint,
    load_checkpoint,
    sample_checkpoint,
    split_images,
)
from pixel_rnn_jax.train.state import (
    TrainState,
    init_train_state,
    learning_rate_scale,
    make_optimizer,
)
from pixel_rnn_jax.train.steps import (
    eval_step,
    evaluate,
    make_eval_step,
    make_train_step,
    nll_per_image,
    train_step,
)

__all__ = [
    "LoadedCheckpoint",
    "TrainState",
    "TrainingDivergedError",
    "eval_step",
    "evaluate",
    "evaluate_checkpoint",
    "init_train_state",
    "learning_rate_scale",
    "load_checkpoint",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "nll_per_image",
    "sample_checkpoint",
    "split_images",
    "train_and_evaluate",
    "train_step",
]
