"""Datasets and input pipelines for PixelRNN.

Typical use::

    from pixel_rnn_jax import data
    spec = data.resolve_dataset(config.data)  # Fails fast or falls back, never downloads.
    it = data.TrainIterator(spec, config.data, global_batch_size=16, seed=0,
                            process_index=jax.process_index(),
                            process_count=jax.process_count())
    batch = next(it)  # {'image': uint8 [16 // process_count, height, width, channels]}
    # with_labels=True (class-conditional models) adds 'label': int32 [local_batch].
    for batch in data.eval_batches(spec, config.data, global_batch_size=16):
        ...           # {'image': uint8 [...], 'mask': bool [local_batch]}

    # Any split by name, e.g. model selection on validation where there is one:
    split = spec.validation_split or spec.eval_split   # == spec.selection_split
    batches = data.eval_batches(spec, config.data, global_batch_size=16, split=split)

Modules: `embedded` (TFDS builders of the package-embedded datasets),
`registry` (names -> `DatasetSpec`, split roles, fallback), `sources`
(validated random access to images), `pipeline` (Grain loaders, host
sharding, eval padding). Preparing the real datasets without TensorFlow
(`experiments.prepare_data`): `download` (checksums, resumable fetches),
`formats` (the original file formats), `prepare` (the TFDS layout); these
are not imported here, so training does not load them.
Importing this package registers the embedded TFDS builders.
"""

from pixel_rnn_jax.data.embedded import (
    EMBEDDED_BUILDERS,
    EmbeddedBinarizedMnist,
    EmbeddedRgb32,
    EmbeddedRgb64,
    load_embedded_builder,
)
from pixel_rnn_jax.data.pipeline import TrainIterator, check_global_batch, eval_batches
from pixel_rnn_jax.data.registry import (
    KNOWN_DATASETS,
    DatasetFallbackWarning,
    DatasetNotPreparedError,
    DatasetSpec,
    labelled_datasets,
    prepare_instructions,
    resolve_dataset,
)
from pixel_rnn_jax.data.sources import ImageSource, open_split, validate_image

__all__ = [
    "EMBEDDED_BUILDERS",
    "KNOWN_DATASETS",
    "DatasetFallbackWarning",
    "DatasetNotPreparedError",
    "DatasetSpec",
    "EmbeddedBinarizedMnist",
    "EmbeddedRgb32",
    "EmbeddedRgb64",
    "ImageSource",
    "TrainIterator",
    "check_global_batch",
    "eval_batches",
    "labelled_datasets",
    "load_embedded_builder",
    "open_split",
    "prepare_instructions",
    "resolve_dataset",
    "validate_image",
]
