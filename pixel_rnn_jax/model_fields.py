"""Which `config.model` fields change the function a model computes, and which only run it.

One answer for every caller: the .prnn fingerprint (`coding.container.fingerprint`: may a
file be decoded by this model?) and the workdir's config check (`workdir.model_differences`:
may this checkpoint be resumed or evaluated under this config?). A leaf, so that both layers
import it (`workdir` may import no model code; `coding` sits above the models).

- Execution-only (`EXECUTION_ONLY_MODEL_FIELDS`): never changes the parameter tree nor the
  function beyond float32 rounding (the same operations, ordered or fused differently):
  `schedule` (how the recurrences are laid out), `unroll` (the scan driver), `remat`
  (what the backward pass recomputes). The coder's cached walk reads none of them.
- Precision (`PRECISION_MODEL_FIELDS`): `dtype` rounds every convolution's and matmul's
  inputs to bfloat16, which moves the logits far beyond float32 rounding (and a coder's
  quantised probabilities with them), so it is part of the function and of a file's
  fingerprint; but the parameters stay float32 under either value, so a checkpoint resumes
  under the other one (mixed-precision fine-tuning of a float32 run).
- Multi-scale fields (`multiscale.*`) are read only by the model named 'multiscale'.
- Every other field shapes the parameters or the function.
"""

from collections.abc import Mapping
from typing import Any

EXECUTION_ONLY_MODEL_FIELDS = frozenset({"schedule", "unroll", "remat"})
PRECISION_MODEL_FIELDS = frozenset({"dtype"})
# Fields a checkpoint does not depend on: it restores under any value of these.
PARAMETER_NEUTRAL_MODEL_FIELDS = EXECUTION_ONLY_MODEL_FIELDS | PRECISION_MODEL_FIELDS
MULTISCALE_FIELD = "multiscale"  # the sub-config only the 'multiscale' model reads


def reads_multiscale_fields(model: Mapping[str, Any]) -> bool:
    """Whether a model config (`config.model.to_dict()` or its JSON) uses `multiscale.*`."""
    return model.get("name") == MULTISCALE_FIELD


def function_fields(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model fields that define its function: all but the execution-only ones and,
    for a model other than 'multiscale', the `multiscale` sub-config it ignores.

    Args:
      model: `config.model.to_dict()` (or the same read back from JSON).

    Returns:
      A shallow copy of `model` without those fields.
    """
    fields = {k: v for k, v in model.items() if k not in EXECUTION_ONLY_MODEL_FIELDS}
    if not reads_multiscale_fields(model):
        fields.pop(MULTISCALE_FIELD, None)
    return fields
