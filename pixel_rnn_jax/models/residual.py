"""The residual unit around every recurrent layer, and the names the parameter tree uses.

Every body unit of the stack is a submodule named `unit_name(kind, index)` (`row_lstm_0`,
`diagonal_bilstm_3`, `pixelcnn_1`); a recurrent layer sits inside its residual unit as
`LAYER` with the unit's mask-B 1x1 back to 2h as `OUTPUT`. The cached bodies read their
parameters through these same names, so a rename is one edit here, caught by the legacy
checkpoint test (tests/test_legacy_checkpoints.py) if it would break saved runs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.nn import layers

LAYER = "layer"  # the recurrent layer inside a ResidualRecurrentUnit
OUTPUT = "output"  # the unit's mask-B 1x1 from h back to 2h features


def unit_name(kind: str, index: int) -> str:
    """The parameter-tree name of body unit `index` of a `kind` model (`row_lstm_0`)."""
    return f"{kind}_{index}"


def unit_class(model: nn.Module, cls: type[nn.Module]) -> type[nn.Module]:
    """`cls`, or `nn.remat(cls)` when the model rematerialises its units (`model.remat`).

    Under `nn.remat` a unit keeps only its input for the backward pass and recomputes the
    rest: activation memory per unit instead of per layer of intermediates. The parameter
    tree does not change: names come from `name=`, not from the (renamed) class.
    """
    return nn.remat(cls) if model.remat else cls


def residual(model: nn.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    """A unit's output from its input `x` and body output `y`, as the model configures it."""
    return x + y if model.use_residual else y


class ResidualRecurrentUnit(nn.Module):
    """2h input -> LSTM layer (h) -> mask-B 1x1 back to 2h -> plus the input."""

    layer: nn.Module  # maps [B, H, W, 2h] (and the context image) to [B, H, W, h]
    num_groups: int  # colour groups (3 for RGB)
    use_residual: bool = True  # add the unit input to its output
    dtype: Any = jnp.float32  # compute dtype of the output 1x1

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
        labels_one_hot: jax.Array | None = None,
    ) -> jax.Array:
        y = self.layer(x, context, conditioning=conditioning, labels_one_hot=labels_one_hot)
        y = layers.masked_1x1(x.shape[-1], self.num_groups, OUTPUT, self.dtype)(y)
        return x + y if self.use_residual else y


def recurrent_unit(model: nn.Module, kind: str, index: int, layer: nn.Module) -> nn.Module:
    """Wraps `layer` (built with `parent=None`) as residual unit `index` of `model`.

    Built with `parent=None`, the layer is adopted by the unit it is passed to as its child
    `LAYER` (`row_lstm_0/layer/...` in the parameter tree); built in the model's scope it
    would sit at the top level instead.
    """
    return unit_class(model, ResidualRecurrentUnit)(
        layer, model.num_channels, model.use_residual, model.dtype, name=unit_name(kind, index)
    )


def unit_params(params, kind: str, num_layers: int) -> list:
    """The parameters of body units 0 .. num_layers - 1 of a `kind` model, in order."""
    return [params[unit_name(kind, index)] for index in range(num_layers)]
