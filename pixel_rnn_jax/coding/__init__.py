"""Lossless compression with a trained model: files whose size is the model's NLL.

- `entropy`: logits -> integer frequency tables; constriction's range coder per image.
- `lockstep`: the sampler's cached walk with the host coding each position (encoder and
  decoder run one compiled program); the coding order of each model type (`WALKS`).
- `container`: the .prnn byte layout, the model fingerprint, the pixel checksum.
- `codec`: images <-> files' bytes, with the header checks.
- `files`: PNG inputs, .prnn and PNG outputs in directories, the report (the CLIs' part).
"""

from pixel_rnn_jax.coding.codec import Decoded, compress, decompress
from pixel_rnn_jax.coding.container import fingerprint
from pixel_rnn_jax.coding.lockstep import LOCKSTEP_BATCH, WALKS

__all__ = ["LOCKSTEP_BATCH", "WALKS", "Decoded", "compress", "decompress", "fingerprint"]
