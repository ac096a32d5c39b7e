"""The residual unit around every recurrent layer, the names the parameter tree uses, and
what a body kind provides (`Body`).

Every body unit of the stack is a submodule named `unit_name(kind, index)` (`row_lstm_0`,
`diagonal_bilstm_3`, `pixelcnn_1`); a recurrent layer sits inside its residual unit as
`LAYER` with the unit's mask-B 1x1 back to 2h as `OUTPUT`. The cached bodies and the
'latency' drivers read their parameters through these same names (`output_dense`,
`unit_output` for the unit's own part), so a rename is one edit here, caught by the legacy
checkpoint test (tests/test_legacy_checkpoints.py) if it would break saved runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.nn import incremental, layers

LAYER = "layer"  # the recurrent layer inside a ResidualRecurrentUnit
OUTPUT = "output"  # the unit's mask-B 1x1 from h back to 2h features


class Body(NamedTuple):
    """One kind of body unit: how to build it, and how to evaluate it one pixel at a time.

    `models.pixel_rnn.BODIES` holds one per model name; `models.registered_body` adds one
    for the length of a with-block (how tests/test_unit_extension.py adds its unit).
    """

    # (model, index) -> a Linen module [B, H, W, 2h] (+ context, conditioning, one-hot
    # labels) -> same shape, named `unit_name(kind, index)`.
    make_unit: Callable[[nn.Module, int], nn.Module]
    # Its cached evaluation for `sampling.cached`.
    cached: incremental.CachedBody
    # The whole body under the 'latency' schedule when it is not unit by unit: (model,
    # params, x, conditioning, one-hot labels) -> every unit's output, from the parameters
    # the units create. None: the units run either schedule themselves (or have no loop).
    latency_stack: Callable[..., list[jax.Array]] | None = None


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


def output_dense(unit: incremental.Params, num_groups: int) -> incremental.Params:
    """A recurrent unit's `OUTPUT` 1x1 as a masked `[h, 2h]` kernel and its `[2h]` bias."""
    return incremental.masked_dense(unit[OUTPUT], num_groups)


def unit_output(
    model: nn.Module, x: jax.Array, hidden: jax.Array, output: incremental.Params
) -> jax.Array:
    """A recurrent unit's output from its input and its layer's hidden state, outside Flax.

    What `ResidualRecurrentUnit` computes after its layer, for the drivers that run the
    units from their parameters (the 'latency' stacks, the cached bodies).

    Args:
      model: the PixelRNN (its `use_residual`).
      x: [..., 2h] the unit's input.
      hidden: [..., h] its layer's output.
      output: `output_dense`, in the compute dtype (the product runs in it).

    Returns:
      [..., 2h].
    """
    return residual(model, x, layers.matmul_2d(hidden, output["kernel"]) + output["bias"])
