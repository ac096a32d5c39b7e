"""Out-of-distribution scores from exact per-sub-pixel likelihoods.

Every score is "higher = more out-of-distribution" and is per image, in bits per dimension
(sub-pixel), so that scores of different images sizes and sets read on one scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np

from pixel_rnn_jax import likelihood


@functools.partial(jax.jit, static_argnames=("model",))
def _log_prob_per_dim(model, variables, images, labels):
    logits = model.apply(variables, images, labels)
    return likelihood.log_prob_per_dim(logits, images, model.num_levels)


def pixel_bits(model, variables, images: np.ndarray, labels=None, batch_size: int = 64):
    """-log2 p(x_d | x_<d) for every sub-pixel of every image.

    The likelihood code's own per-dimension log-probabilities (`likelihood.log_prob_per_dim`
    of the model's logits), in fixed-size batches so that one program is compiled: the last
    batch is padded with copies of its first image and the padding dropped.

    Args:
      model: a Linen model of `pixel_rnn_jax.models`.
      variables: its variables (`{'params': ...}`).
      images: integer `[n, height, width, channels]` in `[0, model.num_levels)`.
      labels: integer `[n]` for a class-conditional model, else None.
      batch_size: images per call.

    Returns:
      float64 `[n, height, width, channels]`: bits of each sub-pixel under the model; their
      sum over an image is -log2 p(image).
    """
    images = np.asarray(images, np.int32)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        count = len(chunk)
        if count < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - count, axis=0)])
        chunk_labels = None
        if labels is not None:
            chunk_labels = np.asarray(labels[start : start + batch_size], np.int32)
            chunk_labels = np.concatenate(
                [chunk_labels, np.repeat(chunk_labels[:1], batch_size - count)]
            )
        log_probs = _log_prob_per_dim(model, variables, chunk, chunk_labels)
        out.append(np.asarray(log_probs, np.float64)[:count])
    if not out:
        return np.zeros((0, *images.shape[1:]), np.float64)
    return -np.concatenate(out) / math.log(2.0)


def _per_dim(total_bits: np.ndarray, bits: np.ndarray) -> np.ndarray:
    return total_bits / math.prod(bits.shape[1:])


def raw_score(bits: np.ndarray) -> np.ndarray:
    """-log2 p(x) per dimension, `[n]`, from per-sub-pixel bits `[n, H, W, C]`."""
    return _per_dim(bits.sum(axis=(1, 2, 3)), bits)


def likelihood_ratio_score(bits: np.ndarray, reference_bits: np.ndarray) -> np.ndarray:
    """-(log2 p(x) - log2 p_ref(x)) per dimension, `[n]`: the negated log-likelihood ratio.

    With a background model trained on perturbed inputs as the reference this is Ren et
    al. (2019)'s score (their LLR, negated so that higher is more out-of-distribution);
    with a local model it is this project's own score. Both cancel what the reference
    explains equally well in and out of distribution (flat backgrounds, local texture).

    Args:
      bits: `[n, H, W, C]` per-sub-pixel bits under the model.
      reference_bits: the same images' bits under the reference model.

    Returns:
      `[n]` bits per dimension the model needs beyond the reference.
    """
    if bits.shape != reference_bits.shape:
        raise ValueError(f"Shapes differ: {bits.shape} and {reference_bits.shape}.")
    return raw_score(bits) - raw_score(reference_bits)


def input_complexity_score(bits: np.ndarray, codec_bits: np.ndarray) -> np.ndarray:
    """S(x) = -log2 p(x) - L(x), per dimension (Serra et al. 2020), `[n]`.

    Args:
      bits: `[n, H, W, C]` per-sub-pixel bits under the model.
      codec_bits: `[n]` each image's size in bits under a lossless codec, L(x).
    """
    codec_bits = np.asarray(codec_bits, np.float64)
    if codec_bits.shape != (len(bits),):
        raise ValueError(f"codec_bits must be [{len(bits)}], got {codec_bits.shape}.")
    return raw_score(bits) - _per_dim(codec_bits, bits)


def combined_score(scores: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> np.ndarray:
    """A typicality test in score space: the summed |z-scores| of every score, `[n]`.

    Each score is standardised by its mean and standard deviation on `reference` (held-out
    in-distribution images, never an outlier), so that scores in different units weigh
    alike. Two-sided, because an outlier can sit on either side of the in-distribution
    images under any one score: MNIST digits are *more* likely than Fashion-MNIST under the
    raw likelihood, constant and inverted images get *lower* ratios to a local model than
    the test images do; a sum, so that moderate evidence from several scores adds up.

    Args:
      scores: {name: `[n]`} the images' scores.
      reference: {name: `[m]`} the same scores of held-out in-distribution images.
    """
    if not scores or set(scores) != set(reference):
        raise ValueError(f"Scores {sorted(scores)} and references {sorted(reference)} differ.")
    total = 0.0
    for name, values in scores.items():
        mean, std = np.mean(reference[name]), np.std(reference[name])
        if not std > 0:
            raise ValueError(f"Score {name!r} is constant on the reference images.")
        total = total + np.abs((np.asarray(values, np.float64) - mean) / std)
    return total


@dataclasses.dataclass(frozen=True)
class Typicality:
    """Nalisnick et al. (2019b)'s typicality test for batches of n images.

    The score of a batch is the distance of its mean -log2 p per dimension from the
    training mean; the threshold is the (1 - alpha) quantile of that distance over
    bootstrap batches of held-out in-distribution images, so about alpha of in-distribution
    batches are flagged.

    Attributes:
      train_mean: mean raw score (bits/dim) of training images.
      threshold: flag a batch whose score is above this.
      batch_size: n, images per batch.
    """

    train_mean: float
    threshold: float
    batch_size: int

    @classmethod
    def fit(
        cls,
        train_raw: np.ndarray,
        validation_raw: np.ndarray,
        batch_size: int,
        *,
        alpha: float = 0.05,
        num_bootstrap: int = 10_000,
        seed: int = 0,
    ) -> Typicality:
        """Fits on raw scores `[n]` of training and of held-out validation images."""
        train_mean = float(np.mean(train_raw))
        rng = np.random.default_rng(seed)
        draws = rng.choice(validation_raw, size=(num_bootstrap, batch_size), replace=True)
        distances = np.abs(draws.mean(axis=1) - train_mean)
        return cls(train_mean, float(np.quantile(distances, 1.0 - alpha)), batch_size)

    def batch_scores(self, raw: np.ndarray) -> np.ndarray:
        """Scores of consecutive disjoint batches of `batch_size` raw scores (rest dropped)."""
        count = len(raw) // self.batch_size
        batches = np.asarray(raw[: count * self.batch_size]).reshape(count, self.batch_size)
        return np.abs(batches.mean(axis=1) - self.train_mean)
