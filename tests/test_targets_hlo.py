"""`experiments.targets.hlo`: per-step counts read from optimised HLO text.

Small hand-written modules check one rule each; a scan compiled on CPU and two excerpts cut
from the Row LSTM train step compiled for TPU v5e and for H100 (tests/fixtures/hlo/) check
the reader on text that XLA printed.
"""

import math
import pathlib
import random

import jax
import jax.numpy as jnp
import pytest

from experiments.targets import hlo

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hlo"


def computation(header: str, *instructions: str) -> str:
    """One computation as XLA prints it: a header line, indented instructions, '}'."""
    return "\n".join([f"{header} {{", *(f"  {line}" for line in instructions), "}"])


def module(*computations: str) -> str:
    return "HloModule test, is_scheduled=true\n\n" + "\n\n".join(computations) + "\n"


STATE = "(s32[], f32[4,8], f32[8,8])"
# A [4,8] x [8,8] matmul in a fusion; the dot inside carries an estimate that must not be
# added (only the fusion instruction's is).
FUSED_DOT = computation(
    "%fused_dot (p0: f32[4,8], p1: f32[8,8]) -> f32[4,8]",
    "%p0 = f32[4,8]{1,0} parameter(0)",
    "%p1 = f32[8,8]{1,0} parameter(1)",
    "ROOT %d = f32[4,8]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0},"
    ' backend_config={"estimated_cycles":"999"}',
)
MATMUL_FLOPS = 2 * 4 * 8 * 8
BODY = computation(
    f"%body (state: {STATE}) -> {STATE}",
    f"%state = {STATE} parameter(0)",
    "%i = s32[] get-tuple-element(%state), index=0",
    "%x = f32[4,8]{1,0} get-tuple-element(%state), index=1",
    "%w = f32[8,8]{1,0} get-tuple-element(%state), index=2",
    "%one = s32[] constant(1)",
    "%next = s32[] add(%i, %one)",
    "%y = f32[4,8]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_dot,"
    ' backend_config={"window_config":{"estimated_cycles":"300"}}',
    f"ROOT %out = {STATE} tuple(%next, %y, %w)",
)
CONDITION = computation(
    f"%cond (state: {STATE}) -> pred[]",
    f"%state = {STATE} parameter(0)",
    "%i = s32[] get-tuple-element(%state), index=0",
    "%n = s32[] constant(10)",
    "ROOT %lt = pred[] compare(%i, %n), direction=LT",
)


def entry(while_config: str = "", start: int = 0) -> str:
    """ENTRY: one while loop over BODY and CONDITION, its counter starting at `start`."""
    return computation(
        f"ENTRY %main (x: f32[4,8], w: f32[8,8]) -> {STATE}",
        "%x = f32[4,8]{1,0} parameter(0)",
        "%w = f32[8,8]{1,0} parameter(1)",
        f"%zero = s32[] constant({start})",
        '%start = s32[] copy(%zero), backend_config={"estimated_cycles":"7"}',
        f"%init = {STATE} tuple(%start, %x, %w)",
        f"ROOT %loop = {STATE} while(%init), condition=%cond, body=%body{while_config}",
    )


def cpu(text: str) -> hlo.HloSummary:
    return hlo.summarize(text, platform="cpu")


def test_known_trip_count_weights_the_body_and_its_fused_dot():
    known = ', backend_config={"known_trip_count":{"n":"5"}}'
    text = module(FUSED_DOT, BODY, CONDITION, entry(known))
    summary = hlo.summarize(text, platform="tpu", clock_hz=1e9)
    # known_trip_count wins over the condition's bound of 10.
    assert summary.loops == (hlo.Loop("body", 5, 1),)
    assert summary.loop_trips == 5 and summary.unknown_trip_counts == 0
    assert summary.flops == 5 * MATMUL_FLOPS  # the fused dot, once per trip
    # Estimates: the fusion (300 cycles) per trip and the entry copy (7); not the dot's 999.
    assert summary.estimated_ops == 5 + 1
    assert summary.estimated_seconds == pytest.approx((5 * 300 + 7) / 1e9)
    # Launches: the copy; the fusion and the add per trip; the compare per condition run.
    assert summary.launched_ops == 1 + 5 * 2 + 6
    assert summary.unestimated_ops == 5 + 6  # the counter's add and the compare
    assert summary.collectives == ()


def test_trip_count_is_read_from_the_condition():
    summary = cpu(module(FUSED_DOT, BODY, CONDITION, entry()))
    assert summary.loops == (hlo.Loop("body", 10, 1),)
    assert summary.flops == 10 * MATMUL_FLOPS
    assert summary.launched_ops == 1 + 10 * 2 + 11
    # The CPU compiler writes no estimates: nothing estimated, zero seconds.
    assert summary.estimated_ops == 0 and summary.estimated_seconds == 0.0
    assert summary.unestimated_ops == summary.launched_ops

    # The counter starts where the init tuple says and moves by the body's constant.
    assert cpu(module(FUSED_DOT, BODY, CONDITION, entry(start=4))).loops[0].trip_count == 6
    by_three = BODY.replace("constant(1)", "constant(3)")
    assert cpu(module(FUSED_DOT, by_three, CONDITION, entry())).loops[0].trip_count == 4

    # The bound on the left: `10 > i` is `i < 10`; `i <= 10` runs once more.
    flipped = CONDITION.replace("compare(%i, %n), direction=LT", "compare(%n, %i), direction=GT")
    assert cpu(module(FUSED_DOT, BODY, flipped, entry())).loops[0].trip_count == 10
    less_equal = CONDITION.replace("direction=LT", "direction=LE")
    assert cpu(module(FUSED_DOT, BODY, less_equal, entry())).loops[0].trip_count == 11

    # A bound that is not a constant: unknown, counted as one trip.
    opaque = CONDITION.replace("constant(10)", "get-tuple-element(%state), index=0")
    unknown = cpu(module(FUSED_DOT, BODY, opaque, entry()))
    assert unknown.loops == (hlo.Loop("body", None, 1),)
    assert unknown.unknown_trip_counts == 1 and unknown.loop_trips == 1
    assert unknown.flops == MATMUL_FLOPS


def test_nested_loops_multiply_runs():
    inner_body = BODY.replace("%body ", "%inner_body ")
    inner_cond = CONDITION.replace("%cond ", "%inner_cond ").replace("constant(10)", "constant(3)")
    outer_body = computation(
        f"%body (state: {STATE}) -> {STATE}",
        f"%state = {STATE} parameter(0)",
        "%i = s32[] get-tuple-element(%state), index=0",
        "%x = f32[4,8]{1,0} get-tuple-element(%state), index=1",
        "%w = f32[8,8]{1,0} get-tuple-element(%state), index=2",
        "%zero = s32[] constant(0)",
        f"%init = {STATE} tuple(%zero, %x, %w)",
        f"%inner = {STATE} while(%init), condition=%inner_cond, body=%inner_body",
        "%y = f32[4,8]{1,0} get-tuple-element(%inner), index=1",
        "%one = s32[] constant(1)",
        "%next = s32[] add(%i, %one)",
        f"ROOT %out = {STATE} tuple(%next, %y, %w)",
    )
    summary = cpu(module(FUSED_DOT, inner_body, inner_cond, outer_body, CONDITION, entry()))
    assert summary.loops == (hlo.Loop("body", 10, 1), hlo.Loop("inner_body", 3, 10))
    assert summary.loop_trips == 10 + 3 * 10
    assert summary.flops == 30 * MATMUL_FLOPS
    # The copy; per outer trip its add, the inner trips' fusion and add and the inner
    # compares; the outer compares.
    assert summary.launched_ops == 1 + 10 * (1 + 3 * 2 + 4) + 11


def test_convolution_flops_per_output_feature():
    summary = cpu(
        module(
            computation(
                "ENTRY %main (x: f32[2,10,10,3], k: f32[3,3,3,16], d: f32[1,10,10,4],"
                " dk: f32[3,3,1,4], a: bf16[16,28,32], b: bf16[64,32,1]) -> f32[2,8,8,16]",
                "%x = f32[2,10,10,3]{3,2,1,0} parameter(0)",
                "%k = f32[3,3,3,16]{3,2,1,0} parameter(1)",
                "%d = f32[1,10,10,4]{3,2,1,0} parameter(2)",
                "%dk = f32[3,3,1,4]{3,2,1,0} parameter(3)",
                "%a = bf16[16,28,32]{2,1,0:T(8,128)(2,1)} parameter(4)",
                "%b = bf16[64,32,1]{1,0,2:T(8,128)(2,1)} parameter(5)",
                "%depthwise = f32[1,8,8,4] convolution(%d, %dk), window={size=3x3},"
                " dim_labels=b01f_01io->b01f, feature_group_count=4",
                "%matmul = f32[16,28,64]{2,1,0:T(8,128)} convolution(%a, %b), window={size=1},"
                " dim_labels=0bf_oi0->0bf",
                "ROOT %conv = f32[2,8,8,16] convolution(%x, %k), window={size=3x3},"
                " dim_labels=b01f_01io->b01f",
            )
        )
    )
    plain = 2 * (2 * 8 * 8 * 16) * (3 * 3 * 3)
    depthwise = 2 * (8 * 8 * 4) * (3 * 3 * 1)  # one input feature per group
    # TPU's matmul as a 1-wide convolution, its kernel's 'o' first: 32 inputs per output.
    as_matmul = 2 * (16 * 28 * 64) * 32
    assert summary.flops == plain + depthwise + as_matmul
    assert summary.launched_ops == 3


def test_gemm_and_convolution_custom_calls():
    gemm_config = (
        '{"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["2"],'
        '"rhs_contracting_dimensions":["1"],"lhs_batch_dimensions":["0"],'
        '"rhs_batch_dimensions":["0"]}},"reification_cost":[{"exec_time_us":2.5,"name":""}]}'
    )
    text = module(
        computation(
            "ENTRY %main (a: f32[6,32,16], b: f32[6,16,8], x: f32[2,10,10,3],"
            " dy: f32[2,8,8,16]) -> f32[6,32,8]",
            "%a = f32[6,32,16]{2,1,0} parameter(0)",
            "%b = f32[6,16,8]{2,1,0} parameter(1)",
            "%x = f32[2,10,10,3]{3,2,1,0} parameter(2)",
            "%dy = f32[2,8,8,16]{3,2,1,0} parameter(3)",
            "%gemm = (f32[6,32,8]{2,1,0}, s8[4194304]{0}) custom-call(%a, %b),"
            f' custom_call_target="__cublas$gemm", backend_config={gemm_config}',
            "%filter = (f32[3,3,3,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), window={size=3x3},"
            ' dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardFilter"',
            "ROOT %result = f32[6,32,8]{2,1,0} get-tuple-element(%gemm), index=0",
        )
    )
    summary = hlo.summarize(text, platform="gpu")
    # A batched GEMM (batch dims are in the result) and the weight gradient of a 3x3 conv
    # (its output, the forward conv's kernel, and the forward output dy).
    assert summary.flops == 2 * (6 * 32 * 8) * 16 + 2 * (2 * 8 * 8 * 16) * (3 * 3 * 3)
    assert summary.estimated_ops == 1 and summary.estimated_seconds == pytest.approx(2.5e-6)
    assert summary.launched_ops == 2 and summary.unestimated_ops == 1


def conv_flops(line: str, *operands: str, platform: str = "cpu") -> float:
    """FLOPs of one instruction `%out = ...(%a, %b, ...)` over parameters of these shapes."""
    params = [f"%{chr(97 + n)} = {shape} parameter({n})" for n, shape in enumerate(operands)]
    header = ", ".join(f"{chr(97 + n)}: {shape}" for n, shape in enumerate(operands))
    text = module(computation(f"ENTRY %main ({header}) -> f32[]", *params, f"ROOT {line}"))
    return hlo.summarize(text, platform=platform, clock_hz=1e9).flops


def test_a_depthwise_weight_gradient_with_batch_group_count_costs_its_forward():
    # The filter gradient of the depthwise conv above: channels in the batch dim of the
    # input and the output-feature dim of dy, one batch group per channel.
    flops = conv_flops(
        "%dk = f32[3,3,1,4] convolution(%a, %b), window={size=8x8}, dim_labels=f01b_i01o->01bf,"
        " batch_group_count=4",
        "f32[1,10,10,4]",
        "f32[1,8,8,4]",
    )
    assert flops == 2 * (8 * 8 * 4) * (3 * 3 * 1)


# The same three products of the Diagonal BiLSTM (h=16, 32x32 images, batch 4) as TPU v5e
# and H100 print them: the 2 x 1 state-to-state step of both directions (TPU: a convolution
# padded 3_3 and dilated 2x, 1 useful tap in 8), its input gradient (dilated 2x: 1 in 2),
# and its weight gradient over the 63 skewed columns (dilated 2x: 1 in 2). Before we
# counted only useful taps, TPU's count of the step was 8x GPU's.
DIAGONAL_BILSTM_PRODUCTS = {
    "state_to_state": (
        (
            "%c = f32[2,64,4,32]{1,3,2,0:T(8,128)} convolution(%a, %b), window={size=2x4"
            " pad=0_0x3_3 lhs_dilate=2x1 rhs_reversal=0x1}, dim_labels=0fb1_01oi->0b1f",
            "bf16[2,32,64,1]{2,1,3,0:T(8,128)(2,1)}",
            "bf16[2,4,32,32]{3,2,1,0:T(8,128)(2,1)}",
        ),
        (
            "%d = f32[2,64,128]{2,1,0} dot(%a, %b), lhs_batch_dims={0},"
            " lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}",
            "f32[2,32,64]{2,1,0}",
            "f32[2,32,128]{2,1,0}",
        ),
        2 * 2 * (4 * 32) * 64 * (2 * 16),  # directions, rows, gates, taps * hidden
    ),
    "input_gradient": (
        (
            "%c = f32[2,4,32,32]{2,3,1,0:T(8,128)} convolution(%a, %b),"
            " window={size=2x1 lhs_dilate=2x1}, dim_labels=0f1b_0oi1->01bf",
            "f32[2,64,4,32]{3,1,2,0:T(8,128)}",
            "bf16[2,32,64,1]{2,1,3,0:T(8,128)(2,1)}",
        ),
        (
            "%d = f32[2,128,32]{2,1,0} dot(%a, %b), lhs_batch_dims={0},"
            " lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={2}",
            "f32[2,128,64]{2,1,0}",
            "f32[2,32,64]{2,1,0}",
        ),
        2 * 2 * (4 * 32) * 64 * (2 * 16),
    ),
    "weight_gradient": (
        (
            "%c = f32[2,32,64,1,1]{2,1,4,0,3:T(8,128)} convolution(%a, %b),"
            " window={size=4x2x32 lhs_dilate=1x2x1}, dim_labels=f102b_1oi02->1bf02",
            "bf16[63,2,4,32,32]{0,4,3,1,2:T(8,128)(2,1)}",
            "bf16[2,64,63,4,32]{2,1,4,0,3:T(8,128)(2,1)}",
        ),
        (
            "%d = f32[2,32,64,32]{2,3,1,0} dot(%a, %b), lhs_batch_dims={0,2},"
            " lhs_contracting_dims={3}, rhs_batch_dims={0,1}, rhs_contracting_dims={2}",
            "f32[2,64,32,252]{3,2,1,0}",
            "f32[2,32,252,32]{3,2,1,0}",
        ),
        2 * 2 * (2 * 16) * 64 * (63 * 4 * 32),  # over 63 columns of 4 * 32 rows
    ),
}


@pytest.mark.parametrize("product", sorted(DIAGONAL_BILSTM_PRODUCTS))
def test_tpu_convolutions_count_the_taps_that_read_real_input_like_gpu_dots(product):
    tpu, gpu, expected = DIAGONAL_BILSTM_PRODUCTS[product]
    assert conv_flops(*tpu, platform="tpu") == expected
    assert conv_flops(*gpu, platform="gpu") == expected


def random_window_dim(rng: random.Random) -> dict[str, int] | None:
    """One spatial dim of a random convolution window, its output size and its useful taps
    counted one by one; None when the window does not fit the padded input."""
    dim = {
        "size": rng.randint(1, 9),
        "kernel": rng.randint(1, 4),
        "stride": rng.randint(1, 3),
        "low": rng.randint(-2, 4),
        "high": rng.randint(-2, 4),
        "lhs_dilate": rng.randint(1, 3),
        "rhs_dilate": rng.randint(1, 2),
    }
    padded = (dim["size"] - 1) * dim["lhs_dilate"] + 1 + dim["low"] + dim["high"]
    dim["out"] = (padded - (dim["kernel"] - 1) * dim["rhs_dilate"] - 1) // dim["stride"] + 1
    if dim["out"] < 1:
        return None
    reads = [
        o * dim["stride"] - dim["low"] + k * dim["rhs_dilate"]
        for o in range(dim["out"])
        for k in range(dim["kernel"])
    ]
    dim["taps"] = sum(
        at % dim["lhs_dilate"] == 0 and 0 <= at // dim["lhs_dilate"] < dim["size"] for at in reads
    )
    return dim


def test_convolution_padding_strides_and_dilations_against_brute_force():
    rng = random.Random(1)
    checked = 0
    while checked < 60:
        d0, d1 = random_window_dim(rng), random_window_dim(rng)
        if d0 is None or d1 is None:
            continue
        window = (
            f"size={d0['kernel']}x{d1['kernel']} stride={d0['stride']}x{d1['stride']}"
            f" pad={d0['low']}_{d0['high']}x{d1['low']}_{d1['high']}"
            f" lhs_dilate={d0['lhs_dilate']}x{d1['lhs_dilate']}"
            f" rhs_dilate={d0['rhs_dilate']}x{d1['rhs_dilate']}"
        )
        flops = conv_flops(
            f"%c = f32[2,{d0['out']},{d1['out']},5] convolution(%a, %b), window={{{window}}},"
            " dim_labels=b01f_01io->b01f",
            f"f32[2,{d0['size']},{d1['size']},3]",
            f"f32[{d0['kernel']},{d1['kernel']},3,5]",
        )
        assert flops == 2 * 2 * 5 * 3 * d0["taps"] * d1["taps"], window
        checked += 1


def test_cudnn_convolutions_with_padding_count_their_real_taps():
    # A 3x3 'SAME' conv of 8x8 images and its input gradient: per spatial dim 8 outputs *
    # 3 taps less the 2 that read padding.
    window = 'window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="'
    real = 2 * 2 * 16 * 3 * (8 * 3 - 2) ** 2
    forward = conv_flops(
        f'%y = (f32[2,8,8,16], u8[0]) custom-call(%a, %b), {window}__cudnn$convForward"',
        "f32[2,8,8,3]",
        "f32[3,3,3,16]",
        platform="gpu",
    )
    backward = conv_flops(
        f'%dx = (f32[2,8,8,3], u8[0]) custom-call(%a, %b), {window}__cudnn$convBackwardInput"',
        "f32[2,8,8,16]",
        "f32[3,3,3,16]",
        platform="gpu",
    )
    assert forward == backward == real


def test_collectives_count_a_start_done_pair_once_with_the_result_bytes():
    groups = "replica_groups={{0,1,2,3,4,5,6,7}}"
    text = module(
        computation(
            "%sum (a: f32[], b: f32[]) -> f32[]",
            "%a = f32[] parameter(0)",
            "%b = f32[] parameter(1)",
            'ROOT %s = f32[] add(%a, %b), backend_config={"estimated_cycles":"5"}',
        ),
        computation(
            "%wrapped (p: bf16[64]) -> bf16[64]",
            "%p = bf16[64]{0} parameter(0)",
            f"ROOT %ar = bf16[64]{{0}} all-reduce(%p), {groups}, to_apply=%sum",
        ),
        computation(
            "ENTRY %main (x: f32[16,8], y: bf16[64]) -> f32[128,8]",
            "%x = f32[16,8]{1,0} parameter(0)",
            "%y = bf16[64]{0} parameter(1)",
            f"%ags = (f32[16,8], f32[128,8]) all-gather-start(%x), dimensions={{0}}, {groups}",
            "%agd = f32[128,8]{1,0} all-gather-done(%ags)",
            "%cps = (f32[16,8], f32[16,8], u32[], u32[]) collective-permute-start(%x),"
            " source_target_pairs={{0,1},{1,0}}",
            "%cpd = f32[16,8]{1,0} collective-permute-done(%cps)",
            f"%ars = f32[16,8]{{1,0}} all-reduce-start(%x), {groups}, to_apply=%sum,"
            ' backend_config={"reification_cost":[{"exec_time_us":4,"name":"sol"}]}',
            "%ard = f32[16,8]{1,0} all-reduce-done(%ars)",
            f"%ar2 = (f32[16,8], bf16[64]) all-reduce(%x, %y), {groups}, to_apply=%sum",
            f"%rs = f32[2,8] reduce-scatter(%x), dimensions={{0}}, {groups}, to_apply=%sum",
            "%as = ((bf16[64]{0}), bf16[64]{0}) async-start(%y), calls=%wrapped",
            "%ad = bf16[64]{0} async-done(%as), calls=%wrapped",
            "ROOT %out = f32[128,8]{1,0} copy(%agd)",
        ),
    )
    summary = hlo.summarize(text, platform="gpu")
    assert summary.collectives == (
        hlo.Collective("all-gather", 1, 128 * 8 * 4),  # the -done's result, not the tuple
        hlo.Collective("all-reduce", 3, 16 * 8 * 4 + (16 * 8 * 4 + 64 * 2) + 64 * 2),
        hlo.Collective("collective-permute", 1, 16 * 8 * 4),
        hlo.Collective("reduce-scatter", 1, 2 * 8 * 4),
    )
    # Launches: 3 starts, all-reduce, reduce-scatter, the wrapped all-reduce, the copy; the
    # reducer (to_apply) is never followed, so its estimate is not added; the
    # all-reduce-start's "sol" estimate is.
    assert summary.launched_ops == 7
    assert summary.estimated_ops == 1 and summary.estimated_seconds == pytest.approx(4e-6)

    # Without its -done, a -start's result is element 1 of its tuple.
    undone = text.replace("  %agd = f32[128,8]{1,0} all-gather-done(%ags)\n", "")
    assert undone != text
    gathers = hlo.summarize(undone, platform="gpu").collectives[0]
    assert gathers == hlo.Collective("all-gather", 1, 128 * 8 * 4)


def test_a_conditional_counts_its_costliest_branch():
    fused = 'kind=kOutput, calls=%fused_dot, backend_config={"estimated_cycles":"300"}'
    text = module(
        FUSED_DOT,
        computation(
            "%cheap (x: f32[4,8], w: f32[8,8]) -> f32[4,8]",
            "%x = f32[4,8]{1,0} parameter(0)",
            "%w = f32[8,8]{1,0} parameter(1)",
            'ROOT %c = f32[4,8]{1,0} copy(%x), backend_config={"estimated_cycles":"10"}',
        ),
        computation(
            "%costly (x: f32[4,8], w: f32[8,8]) -> f32[4,8]",
            "%x = f32[4,8]{1,0} parameter(0)",
            "%w = f32[8,8]{1,0} parameter(1)",
            f"%y = f32[4,8]{{1,0}} fusion(%x, %w), {fused}",
            f"ROOT %z = f32[4,8]{{1,0}} fusion(%y, %w), {fused}",
        ),
        computation(
            "ENTRY %main (i: s32[], x: f32[4,8], w: f32[8,8]) -> f32[4,8]",
            "%i = s32[] parameter(0)",
            "%x = f32[4,8]{1,0} parameter(1)",
            "%w = f32[8,8]{1,0} parameter(2)",
            "ROOT %c = f32[4,8]{1,0} conditional(%i, %x, %w),"
            " branch_computations={%cheap, %costly}",
        ),
    )
    summary = hlo.summarize(text, platform="tpu", clock_hz=1e9)
    assert summary.flops == 2 * MATMUL_FLOPS
    assert summary.estimated_seconds == pytest.approx(600e-9)
    assert summary.launched_ops == 2 and summary.estimated_ops == 2
    # Predicated conditionals name their two branches apart.
    predicated = text.replace(
        "branch_computations={%cheap, %costly}",
        "true_computation=%cheap, false_computation=%costly",
    )
    assert predicated != text
    assert hlo.summarize(predicated, platform="tpu", clock_hz=1e9) == summary


def test_estimates_without_a_tpu_clock_are_nan_but_still_counted():
    text = module(FUSED_DOT, BODY, CONDITION, entry())
    summary = hlo.summarize(text, platform="tpu")
    assert math.isnan(summary.estimated_seconds)
    assert summary.estimated_ops == 10 + 1
    with pytest.raises(ValueError, match="unknown platform"):
        hlo.summarize(text, platform="ipu")


def test_scan_compiled_on_cpu():
    def scanned(x):
        w = jnp.full((8, 8), 0.5, x.dtype)

        def step(carry, _):
            return jnp.tanh(carry @ w), None

        return jax.lax.scan(step, x, None, length=7)[0]

    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    text = jax.jit(scanned).lower(x).compile().as_text()
    summary = cpu(text)
    assert [loop.trip_count for loop in summary.loops] == [7]
    assert summary.loop_trips == 7
    assert summary.flops == 7 * 2 * 4 * 8 * 8
    # The same count from the condition alone (CPU wraps its compare in a fusion).
    stripped = text.replace('"known_trip_count":{"n":"7"}', '"unknown":{}')
    assert stripped != text
    assert cpu(stripped).loops == summary.loops


# Both excerpts hold the same real matmul of a Row LSTM loop body, [448, 64] x [64, 64] per
# trip (TPU prints it as a convolution in a nested fusion, GPU as a Triton GEMM fusion), for
# 28 trips.
EXCERPT_FLOPS = 28 * 2 * 448 * 64 * 64


def test_tpu_excerpt():
    text = (FIXTURES / "tpu_row_lstm_excerpt.hlo").read_text()
    summary = hlo.summarize(text, platform="tpu", clock_hz=1.5e9)
    # No known_trip_count on TPU: `i < 28` from 0 by the body's constant 1.
    assert summary.loops == (hlo.Loop("wide.region_3.18_spmd.clone.clone.sunk", 28, 1),)
    assert summary.flops == EXCERPT_FLOPS
    # Only the matmul fusion carries estimated_cycles (384 per trip).
    assert summary.estimated_ops == 28
    assert summary.estimated_seconds == pytest.approx(28 * 384 / 1.5e9)
    # Per trip the fusion and the counter's add; 29 compares; copy-start, the counter's
    # copy and the all-reduce in the entry (AllocateBuffer and copy-done are no launches).
    assert summary.launched_ops == 28 * 2 + 29 + 3
    assert summary.unestimated_ops == summary.launched_ops - 28
    assert summary.collectives == (hlo.Collective("all-reduce", 1, 32 * 4 + 7 * 7 * 32 * 4),)


def test_gpu_excerpt():
    text = (FIXTURES / "gpu_row_lstm_excerpt.hlo").read_text()
    summary = hlo.summarize(text, platform="gpu")
    assert summary.loops == (hlo.Loop("region_0.1_spmd.clone.clone", 28, 1),)
    assert summary.flops == EXCERPT_FLOPS
    # The unnamed cost model's exec_time_us: per trip the concatenate (0.0675), the GEMM
    # (0.11975, not the experimental GEMM model's 5.156) and the counter (0.001); 29
    # compares (0.001); the all-reduce's only estimate ("sol", 31.417).
    per_trip = 0.0675 + 0.11975 + 0.001
    assert summary.estimated_seconds == pytest.approx((28 * per_trip + 29 * 0.001 + 31.417) * 1e-6)
    assert summary.estimated_ops == 28 * 3 + 29 + 1
    # The entry's two copies of the counter carry no estimate.
    assert summary.unestimated_ops == 2
    assert summary.launched_ops == summary.estimated_ops + 2
    assert summary.collectives == (hlo.Collective("all-reduce", 1, 78658 * 4),)
    # Without known_trip_count the trips come from the fused compare in the condition.
    unknown = text.replace('"known_trip_count":{"n":"28"},', "")
    assert "known_trip_count" not in unknown
    assert hlo.summarize(unknown, platform="gpu") == summary


def test_junk_and_truncated_text_give_a_summary_or_a_clear_error():
    rng = random.Random(0)
    texts = [path.read_text() for path in sorted(FIXTURES.glob("*.hlo"))]
    assert len(texts) == 2
    alphabet = '(){}[]%=,"\n abcENTRY:0123456789-_./*'
    cases = ["", "HloModule empty\n", "ENTRY %e {\n  ROOT %x = f32[ bad(\n"]
    cases += ["".join(rng.choice(alphabet) for _ in range(500)) for _ in range(50)]
    for text in texts:
        cases += [text[: rng.randrange(len(text))] for _ in range(20)]
        cases += [text[rng.randrange(len(text)) :] for _ in range(5)]
        lines = text.splitlines()
        cases += ["\n".join(line for line in lines if rng.random() < 0.7) for _ in range(10)]
    summaries = 0
    for text in cases:
        for platform in ("tpu", "gpu"):
            try:
                summary = hlo.summarize(text, platform=platform, clock_hz=1e9)
            except ValueError as error:
                assert str(error).startswith("not an HLO module"), error
            else:
                summaries += 1
                assert summary.launched_ops >= 0 and summary.flops >= 0
    assert summaries > 0  # texts that keep their ENTRY line still read
    with pytest.raises(ValueError, match="not an HLO module"):
        hlo.summarize("", platform="gpu")
