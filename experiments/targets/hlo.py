"""What a compiled XLA program does per step, read from its optimised HLO text.

We compile the train step ahead of time for accelerators that this machine does not have
(`lowered.compile()` against a TPU or GPU topology) and cannot run it, so what the step will
do is read from `compiled.as_text()`: the program after every optimisation pass, with the
compiler's own per-kernel estimates in each instruction's `backend_config`. The text is all
that is read (no jax import): any HLO module string from any version works as far as its
lines follow the usual printed form, and lines that do not are skipped.

How often things run:

- ENTRY runs once. A `while` runs its body `trip_count` times and its condition
  `trip_count + 1` times per execution of the `while` itself, so a loop inside a loop body
  runs once per trip of the outer one (`Loop.runs`). A loop whose trip count cannot be read
  counts as one trip (and in `unknown_trip_counts`).
- The trip count is the `known_trip_count` in the while's backend_config when the compiler
  wrote one (GPU does); otherwise it is read from the condition: its ROOT (or the ROOT of a
  fusion it calls) compares the loop counter, a `get-tuple-element` of the loop state,
  with a constant. The counter starts at the constant in the same place of the while's init
  tuple (0 when that is not a readable constant: TPU and GPU loops from `lax.scan` start at
  0) and moves by the constant that the body's ROOT tuple adds to it (1 when unreadable).
- Of a `conditional`'s branches the costliest counts, once per execution (by estimate,
  then FLOPs, then launched ops): an upper bound of what one execution costs. The loops
  of the other branches are not listed.
- `call` and `async-start` (`to_apply=` / `calls=`) run their computation once per
  execution. `to_apply=` of reduce, scatter, sort, all-reduce... (a per-element reducer)
  is never followed.
- Fusion computations (`calls=` of a `fusion`) are followed for FLOPs and collectives
  only: their instructions are not launches, and what they carry in backend_config is not
  an estimate of theirs (the estimate sits on the fusion instruction that calls them).

What is counted, each weighted by how often its computation runs:

- `flops`: 2 * multiply-adds of every `dot` and `convolution` (TPU prints its matmuls as
  convolutions), also inside fusions, and of cuBLAS / cuDNN custom-calls. Elementwise work
  is left out, so this is the matmul work a chip would do, not `cost_analysis()["flops"]`
  (which also counts every while body once, whatever its trip count). A convolution
  counts only the multiply-adds whose input element is real, not padding nor a hole of
  `lhs_dilate` (as XLA's HloCostAnalysis counts them): TPU prints the Diagonal BiLSTM's
  2 x 1 state-to-state step and the gradients of convolutions as convolutions padded and
  dilated to 2-8x their useful taps, where GPU prints a dot of the useful ones. Zeros that
  a compiler adds to a matmul itself do count (GPU's split-K GEMMs round K up: 8064 to
  8192 in the Diagonal BiLSTM's weight gradients, +0.1% of its train step).
- Estimates: TPU instructions carry `"estimated_cycles"` (seconds = cycles / clock_hz);
  GPU instructions compiled with `xla_gpu_collect_cost_model_stats=True` carry a
  `"reification_cost"` list of `{"exec_time_us": ..., "name": ...}`, one entry per cost
  model: the unnamed one (XLA's GpuPerformanceModel) is taken, else the first (collectives
  carry only the "sol" model's). Only instructions of control-flow computations count.
- Launched ops: top-level instructions that would each be a kernel, DMA or collective on
  the device: everything except the structural ones (parameter, constant, tuple,
  get-tuple-element, bitcast, while, conditional, call, async wrappers, `*-done` waits and
  a few more in `_NOT_LAUNCHED`) and custom-calls that only reserve memory.
- Collectives (all-reduce, all-gather, reduce-scatter, collective-permute, all-to-all,
  collective-broadcast, ragged-all-to-all): a `-start`/`-done` pair counts once, under
  the base kind, and so does a collective wrapped by `async-start`. Bytes are those of the
  result per chip: the result shape summed over tuple elements; for a `-start` the shape of
  its `-done` (the `-start`'s own tuple may also hold the operands and sync flags: XLA
  prints all-gather-start as `(operand, result)` and collective-permute-start with two
  `u32[]` contexts), or, without a `-done`, element 1 of a `-start` tuple (all-gather,
  collective-permute) or the whole of an all-reduce-start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator

# ---- the public summary ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Collective:
    """One kind of collective over the step."""

    kind: str  # 'all-reduce', 'all-gather', ...: a -start/-done pair counts under its base
    count: int  # executions per step
    bytes: int  # result bytes per chip per step, summed over executions


@dataclasses.dataclass(frozen=True)
class Loop:
    """One `while` instruction of the program."""

    body: str  # the while body computation's name
    trip_count: int | None  # None when it cannot be read
    runs: int  # executions of the while itself per step (its enclosing loops' trips)


@dataclasses.dataclass(frozen=True)
class HloSummary:
    """What one execution of the program runs (module docstring)."""

    loops: tuple[Loop, ...]  # in program order, a nested loop after the one holding it
    loop_trips: int  # sum of trip_count * runs (unknown trip counts count 1)
    unknown_trip_counts: int  # loops (while instructions) whose trip count was not read
    flops: float  # 2 * multiply-adds of dots, convolutions and GEMM/conv custom-calls
    estimated_seconds: float  # the compiler's estimates summed; nan for TPU without a clock
    estimated_ops: int  # executions of instructions that carry an estimate
    unestimated_ops: int  # executions of launched ops that carry none
    launched_ops: int  # executions of top-level ops that would each be a launch
    collectives: tuple[Collective, ...]  # one per kind that occurs, by kind name


def summarize(hlo_text: str, *, platform: str, clock_hz: float | None = None) -> HloSummary:
    """Reads what one execution of a compiled program runs from its HLO text.

    Args:
      hlo_text: the optimised module, as `compiled.as_text()` prints it.
      platform: 'tpu', 'gpu' (or 'cuda', 'rocm'), or 'cpu': where estimates are read from
        (the CPU compiler writes none).
      clock_hz: the TPU core clock that turns estimated cycles into seconds; without it a
        TPU program's `estimated_seconds` is nan (its `estimated_ops` still count).

    Returns:
      The summary; see the module docstring for what each count includes.

    Raises:
      ValueError: the text holds no ENTRY computation, or the platform is unknown.
    """
    platform = platform.lower()
    if platform not in _PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: expected one of {sorted(_PLATFORMS)}")
    module = _parse_module(hlo_text)
    totals = _Walk(module, platform).control(module.entry)
    if platform == "tpu":
        seconds = totals.estimate / clock_hz if clock_hz else math.nan
    else:
        seconds = totals.estimate * 1e-6  # GPU estimates are in microseconds
    return HloSummary(
        loops=totals.loops,
        loop_trips=sum(
            (1 if loop.trip_count is None else loop.trip_count) * loop.runs for loop in totals.loops
        ),
        unknown_trip_counts=sum(loop.trip_count is None for loop in totals.loops),
        flops=float(totals.flops),
        estimated_seconds=seconds,
        estimated_ops=totals.estimated_ops,
        unestimated_ops=totals.unestimated_ops,
        launched_ops=totals.launched_ops,
        collectives=tuple(
            Collective(kind, count, size)
            for kind, (count, size) in sorted(dict(totals.collectives).items())
        ),
    )


_PLATFORMS = frozenset({"tpu", "gpu", "cuda", "rocm", "cpu"})

# ---- parsing ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Instruction:
    """One line `[ROOT] %name = shape opcode(operands), attributes`."""

    name: str
    shape: str  # the result shape as printed (layouts and /*index=*/ comments kept)
    opcode: str
    operands: tuple[str, ...]  # operand names without '%' ('' for a literal)
    operand_shapes: tuple[str, ...]  # shapes printed inline before an operand, else ''
    literal: str  # the text between the parentheses (a constant's value)
    attributes: str  # the text after the operands, metadata and backend_config removed
    backend_config: str  # the backend_config's text, '' when none
    is_root: bool


@dataclasses.dataclass(frozen=True)
class _Computation:
    name: str
    instructions: tuple[_Instruction, ...]
    by_name: dict[str, _Instruction]

    @property
    def root(self) -> _Instruction | None:
        roots = [i for i in self.instructions if i.is_root]
        return roots[0] if roots else (self.instructions[-1] if self.instructions else None)


@dataclasses.dataclass(frozen=True)
class _Module:
    computations: dict[str, _Computation]
    entry: str


_HEADER = re.compile(r"^(ENTRY\s+)?%?([A-Za-z_][\w.\-]*)\s*[({]")
_ASSIGNMENT = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S.*)$")
_OPCODE = re.compile(r"\s*([a-z][a-z0-9_\-]*)\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_OPERAND = re.compile(r"%?[A-Za-z_][\w.\-]*")


def _parse_module(text: str) -> _Module:
    """Computations and their instructions; lines that fit neither are skipped.

    A computation opens with a line at column 0 that ends in '{' (`%name (params) -> shape
    {`, `ENTRY %name ... {`) and closes with a line `}`. A module cut short keeps what it has.
    """
    computations: dict[str, _Computation] = {}
    entry = None
    current: tuple[str, list[_Instruction]] | None = None

    def close() -> None:
        if current is not None:
            name, instructions = current
            computations[name] = _Computation(
                name, tuple(instructions), {i.name: i for i in instructions}
            )

    for line in text.splitlines():
        stripped = line.rstrip()
        if not stripped:
            continue
        if current is not None and stripped == "}":
            close()
            current = None
            continue
        header = _HEADER.match(stripped)
        if (
            header
            and stripped.endswith("{")
            and not stripped.startswith("HloModule")
            and not line[0].isspace()
        ):
            close()
            current = (header.group(2), [])
            if header.group(1):
                entry = header.group(2)
            continue
        if current is not None:
            instruction = _parse_instruction(stripped)
            if instruction is not None:
                current[1].append(instruction)
    close()
    if not computations:
        raise ValueError("not an HLO module: no computation ('%name (...) -> ... {') found")
    if entry is None or entry not in computations:
        raise ValueError("not an HLO module: no ENTRY computation found")
    return _Module(computations, entry)


def _parse_instruction(line: str) -> _Instruction | None:
    """One instruction line, or None for a line of another form."""
    match = _ASSIGNMENT.match(line)
    if match is None:
        return None
    rest = match.group(3)
    end = _shape_end(rest)
    if end is None:
        return None
    shape, rest = rest[:end], rest[end:]
    opcode = _OPCODE.match(rest)
    if opcode is None:
        return None
    start = opcode.end() - 1
    close = _closing(rest, start)
    if close is None:
        return None
    literal = rest[start + 1 : close]
    names, shapes = [], []
    for operand in _split_top(_COMMENT.sub("", literal)):
        # `%x`, `x` (hand-written HLO), or `f32[4,8]{1,0} %x` (older printers); a literal
        # (`28`, `{1, 2}`) names nothing.
        operand = operand.strip()
        token = operand.rsplit(" ", 1)[-1]
        if _OPERAND.fullmatch(token):
            names.append(token.lstrip("%"))
            shapes.append(operand[: -len(token)].strip())
        else:
            names.append("")
            shapes.append("")
    attributes, backend_config = _split_attributes(rest[close + 1 :])
    return _Instruction(
        name=match.group(2),
        shape=shape,
        opcode=opcode.group(1),
        operands=tuple(names),
        operand_shapes=tuple(shapes),
        literal=literal,
        attributes=attributes,
        backend_config=backend_config,
        is_root=bool(match.group(1)),
    )


_OPEN = {"(": ")", "[": "]", "{": "}"}


def _closing(text: str, start: int) -> int | None:
    """The index of the bracket closing the one at `start` (strings skipped), or None."""
    depth = 0
    in_string = False
    i = start
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _OPEN:
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _shape_end(text: str) -> int | None:
    """Where the result shape at the start of `text` ends (a tuple or one array)."""
    if text.startswith("("):
        close = _closing(text, 0)
        return None if close is None else close + 1
    depth = 0
    for i, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char.isspace() and depth == 0:
            return i
    return None


def _split_top(text: str) -> list[str]:
    """`text` split at its top-level commas."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _split_attributes(text: str) -> tuple[str, str]:
    """(attributes without metadata and backend_config, the backend_config's text).

    Metadata goes first so that an op_name cannot pass for an attribute; backend_config is
    JSON (`{...}`) in today's text and an escaped string (`"{...}"`) in older ones.
    """
    backend_config = ""
    for key in ("metadata=", "backend_config="):
        at = text.find(key)
        while at > 0 and text[at - 1] not in " ,":  # `key=` must start an attribute
            at = text.find(key, at + 1)
        if at < 0:
            continue
        value = at + len(key)
        if value < len(text) and text[value] == '"':
            end = value + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            raw = text[value : end + 1]
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        elif value < len(text) and text[value] in _OPEN:
            end = _closing(text, value)
            if end is None:
                end = len(text) - 1
            body = text[value : end + 1]
        else:
            continue
        if key == "backend_config=":
            backend_config = body
        text = text[:at] + text[end + 1 :]
    return text, backend_config


# ---- shapes ----------------------------------------------------------------------------

_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")
_BITS = {  # bits per element; the f8 types (f8e4m3fn, ...) are 8, see _bytes
    **dict.fromkeys(("s2", "u2"), 2),
    **dict.fromkeys(("s4", "u4"), 4),
    **dict.fromkeys(("pred", "s8", "u8"), 8),
    **dict.fromkeys(("bf16", "f16", "s16", "u16"), 16),
    **dict.fromkeys(("f32", "s32", "u32"), 32),
    **dict.fromkeys(("f64", "s64", "u64", "c64"), 64),
    "c128": 128,
}


def _dims(shape: str) -> tuple[int, ...] | None:
    """The dimensions of an array shape (`f32[16,28]{1,0}`); None for a tuple or junk."""
    match = _ARRAY.match(shape.strip())
    if match is None:
        return None
    dims = []
    for dim in match.group(2).split(","):
        digits = re.sub(r"[^0-9]", "", dim)  # `<=8` (a bounded dynamic dim) counts as 8
        if dim.strip():
            if not digits:
                return None
            dims.append(int(digits))
    return tuple(dims)


def _elements(shape: str) -> Iterator[str]:
    """The top-level elements of a tuple shape (the shape itself if it is an array)."""
    shape = _COMMENT.sub("", shape).strip()
    if shape.startswith("(") and shape.endswith(")"):
        yield from (part.strip() for part in _split_top(shape[1:-1]))
    else:
        yield shape


def _bytes(shape: str) -> int:
    """Bytes of a shape, every array of a (nested) tuple summed; sub-byte types rounded up."""
    total = 0
    for dtype, dims in _ARRAY.findall(_COMMENT.sub("", shape)):
        count = _dims(f"{dtype}[{dims}]")
        if count is None:
            continue
        bits = _BITS.get(dtype, 8 if dtype.startswith("f8") else 0)
        total += -(-math.prod(count) * bits // 8)
    return total


# ---- attributes ------------------------------------------------------------------------


def _attribute(instruction: _Instruction, key: str) -> str | None:
    """The raw value of `key=` (a name, a `{...}` list, a quoted string), or None."""
    match = re.search(rf"(?:^|[\s,]){re.escape(key)}=", instruction.attributes)
    if match is None:
        return None
    text = instruction.attributes[match.end() :]
    if text[:1] in _OPEN:
        end = _closing(text, 0)
        return text if end is None else text[: end + 1]
    if text[:1] == '"':
        end = text.find('"', 1)
        return text[1:end] if end > 0 else text[1:]
    return re.match(r"[^,\s]*", text).group(0)


def _names(value: str | None) -> list[str]:
    """Computation names in an attribute value (`%body`, `{%a, %b}`)."""
    if not value:
        return []
    return [n.lstrip("%") for n in re.findall(r"%?[A-Za-z_][\w.\-]*", value)]


def _integers(value: str | None) -> list[int]:
    return [int(n) for n in re.findall(r"-?\d+", value or "")]


# ---- the walk over the call graph ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Totals:
    """What one execution of a computation runs, with everything it calls."""

    loops: tuple[Loop, ...] = ()
    flops: int = 0
    estimate: float = 0.0  # cycles on TPU, microseconds on GPU
    estimated_ops: int = 0
    unestimated_ops: int = 0
    launched_ops: int = 0
    collectives: tuple[tuple[str, tuple[int, int]], ...] = ()  # kind -> (count, bytes)

    def __add__(self, other: _Totals) -> _Totals:
        collectives = dict(self.collectives)
        for kind, (count, size) in other.collectives:
            old = collectives.get(kind, (0, 0))
            collectives[kind] = (old[0] + count, old[1] + size)
        return _Totals(
            self.loops + other.loops,
            self.flops + other.flops,
            self.estimate + other.estimate,
            self.estimated_ops + other.estimated_ops,
            self.unestimated_ops + other.unestimated_ops,
            self.launched_ops + other.launched_ops,
            tuple(collectives.items()),
        )

    def times(self, n: int) -> _Totals:
        """This computation run `n` times."""
        return _Totals(
            tuple(dataclasses.replace(loop, runs=loop.runs * n) for loop in self.loops),
            self.flops * n,
            self.estimate * n,
            self.estimated_ops * n,
            self.unestimated_ops * n,
            self.launched_ops * n,
            tuple((kind, (count * n, size * n)) for kind, (count, size) in self.collectives),
        )

    def cost(self) -> tuple[float, int, int]:
        """What a conditional's costliest branch is chosen by."""
        return (self.estimate, self.flops, self.launched_ops)


_NOTHING = _Totals()

# Structural ops and waits: no kernel of their own (a `-start` is the launch of its pair).
_NOT_LAUNCHED = frozenset(
    {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "domain"}  # data
    | {"while", "conditional", "call", "async-start", "async-update", "async-done"}  # control
    | {"after-all", "add-dependency", "opt-barrier"}  # ordering only
)
# Custom-calls that reserve a buffer and run nothing (TPU's while-loop output buffers).
_NO_KERNEL_TARGETS = frozenset({"AllocateBuffer"})
_COLLECTIVES = frozenset(
    {"all-reduce", "all-gather", "reduce-scatter", "all-to-all", "ragged-all-to-all"}
    | {"collective-permute", "collective-broadcast"}
)
_FORWARD_OPS = frozenset({"copy", "bitcast", "convert", "reshape", "broadcast"})


class _Walk:
    """Totals per computation, each computed once (a program calls many of them often)."""

    def __init__(self, module: _Module, platform: str):
        self.module = module
        self.platform = platform
        self.memo: dict[tuple[str, bool], _Totals] = {}
        self.active: set[tuple[str, bool]] = set()

    def control(self, name: str) -> _Totals:
        """A control-flow computation: its launches, estimates, loops and all it calls."""
        return self._memoised(name, fused=False)

    def fused(self, name: str) -> _Totals:
        """A fusion's computation: FLOPs and collectives only."""
        return self._memoised(name, fused=True)

    def _memoised(self, name: str, fused: bool) -> _Totals:
        key = (name, fused)
        computation = self.module.computations.get(name)
        if computation is None or key in self.active:  # missing, or a cycle in junk input
            return _NOTHING
        if key not in self.memo:
            self.active.add(key)
            total = _NOTHING
            for instruction in computation.instructions:
                total = total + self._instruction(computation, instruction, fused)
            self.active.discard(key)
            self.memo[key] = total
        return self.memo[key]

    def _instruction(self, computation: _Computation, inst: _Instruction, fused: bool) -> _Totals:
        total = _Totals(
            flops=_flops(computation, inst),
            collectives=_collective(computation, inst),
        )
        if inst.opcode == "fusion":
            for called in _names(_attribute(inst, "calls")):
                total = total + self.fused(called)
        if fused:
            return total
        total = total + self._launch(inst)
        if inst.opcode == "while":
            total = total + self._while(computation, inst)
        elif inst.opcode == "conditional":
            branches = _names(_attribute(inst, "branch_computations")) + [
                name
                for key in ("true_computation", "false_computation")
                for name in _names(_attribute(inst, key))
            ]
            costs = [self.control(branch) for branch in branches]
            if costs:
                total = total + max(costs, key=_Totals.cost)
        elif inst.opcode == "call":
            for key in ("to_apply", "calls"):
                for called in _names(_attribute(inst, key)):
                    total = total + self.control(called)
        elif inst.opcode == "async-start":
            for called in _names(_attribute(inst, "calls")):
                total = total + self.control(called)
        return total

    def _launch(self, inst: _Instruction) -> _Totals:
        """The launch and the estimate of one top-level instruction."""
        launched = not (
            inst.opcode in _NOT_LAUNCHED
            or inst.opcode.endswith("-done")
            or (
                inst.opcode == "custom-call"
                and _attribute(inst, "custom_call_target") in _NO_KERNEL_TARGETS
            )
        )
        estimate = _estimate(inst.backend_config, self.platform)
        return _Totals(
            estimate=estimate or 0.0,
            estimated_ops=int(estimate is not None),
            unestimated_ops=int(estimate is None and launched),
            launched_ops=int(launched),
        )

    def _while(self, computation: _Computation, inst: _Instruction) -> _Totals:
        body = (_names(_attribute(inst, "body")) or [""])[0]
        condition = (_names(_attribute(inst, "condition")) or [""])[0]
        trips = _trip_count(self.module, computation, inst, condition, body)
        n = 1 if trips is None else trips
        return (
            _Totals(loops=(Loop(body, trips, 1),))
            + self.control(body).times(n)
            + self.control(condition).times(n + 1)
        )


# ---- per-instruction counts ------------------------------------------------------------


def _operand_shape(computation: _Computation, inst: _Instruction, index: int) -> str:
    """An operand's shape: printed inline, else its defining instruction's."""
    if index >= len(inst.operands):
        return ""
    if inst.operand_shapes[index]:
        return inst.operand_shapes[index]
    defining = computation.by_name.get(inst.operands[index])
    return defining.shape if defining else ""


def _conv_flops(inst: _Instruction, lhs: str, kernel: str, output: str) -> int:
    """2 * the multiply-adds of a convolution that read a real input element.

    As XLA's HloCostAnalysis counts them: 2 * batch * output features * kernel input
    features (`feature_group_count` is already in the kernel's input-feature dim,
    `batch_group_count` in the output's batch dim) * the (output, kernel) position pairs of
    each spatial dim whose input position is neither padding nor a hole of `lhs_dilate`.
    TPU prints gradients and the Diagonal BiLSTM's 2 x 1 state-to-state convolution as
    convolutions padded, and dilated, to several times the useful taps; GPU prints the same
    math as a dot of the useful ones.
    """
    labels = _conv_labels(_attribute(inst, "dim_labels"))
    dims = [_dims(lhs), _dims(kernel), _dims(output)]
    if labels is None or any(
        d is None or len(d) != len(names) for d, names in zip(dims, labels, strict=True)
    ):
        return 0
    (lhs_dims, kernel_dims, out_dims), (lhs_labels, kernel_labels, out_labels) = dims, labels
    spatial = sorted(c for c in lhs_labels if c.isdigit())
    if any(sorted(c for c in other if c.isdigit()) != spatial for other in labels[1:]):
        return 0
    window = _window(_attribute(inst, "window"), len(spatial))
    taps = 1
    for n, label in enumerate(spatial):
        stride, (low, _), lhs_dilate, rhs_dilate = (field[n] for field in window)
        taps *= _valid_taps(
            lhs_dims[lhs_labels.index(label)],
            kernel_dims[kernel_labels.index(label)],
            out_dims[out_labels.index(label)],
            stride,
            low,
            lhs_dilate,
            rhs_dilate,
        )
    return (
        2
        * out_dims[out_labels.index("b")]
        * out_dims[out_labels.index("f")]
        * kernel_dims[kernel_labels.index("i")]
        * taps
    )


def _conv_labels(dim_labels: str | None) -> tuple[str, str, str] | None:
    """(input, kernel, output) labels of `dim_labels=b01f_01io->b01f`, or None if malformed."""
    found = re.fullmatch(r"([a-z0-9]+)_([a-z0-9]+)->([a-z0-9]+)", dim_labels or "")
    if found is None:
        return None
    lhs, kernel, out = found.groups()
    for labels, needed in ((lhs, "bf"), (kernel, "io"), (out, "bf")):
        if len(set(labels)) != len(labels) or any(c not in labels for c in needed):
            return None
    return lhs, kernel, out


def _window(value: str | None, rank: int) -> list[list]:
    """[strides, (low, high) paddings, lhs dilations, rhs dilations] of a
    `window={size=2x4 stride=1x1 pad=0_0x3_3 lhs_dilate=2x1 rhs_dilate=1x1}`, one entry per
    spatial dim; what is not printed (or not readable) has its default."""
    fields = dict(re.findall(r"(\w+)=([-\w]+)", value or ""))

    def per_dim(key: str, default, parse) -> list:
        parts = fields[key].split("x") if key in fields else []
        try:
            values = [parse(part) for part in parts]
        except ValueError:
            values = []
        return values if len(values) == rank else [default] * rank

    def padding(part: str) -> tuple[int, int]:
        low, high = part.split("_")
        return int(low), int(high)

    return [
        per_dim("stride", 1, int),
        per_dim("pad", (0, 0), padding),
        per_dim("lhs_dilate", 1, int),
        per_dim("rhs_dilate", 1, int),
    ]


def _valid_taps(
    size: int, kernel: int, out: int, stride: int, low: int, lhs_dilate: int, rhs_dilate: int
) -> int:
    """(output, kernel) position pairs of one spatial dim that read a real input element.

    Output o and tap k read position o * stride - low + k * rhs_dilate of the padded,
    `lhs_dilate`-dilated input, a real element when it is a multiple of `lhs_dilate` in
    [0, (size - 1) * lhs_dilate]. Counted per tap in closed form: the valid o of one tap
    form an arithmetic progression.
    """
    if min(size, kernel, out, stride, lhs_dilate, rhs_dilate) < 1:
        return 0
    last = (size - 1) * lhs_dilate
    count = 0
    for k in range(kernel):
        offset = k * rhs_dilate - low  # o * stride + offset must be in [0, last]
        first = max(0, -(offset // stride))  # ceil(-offset / stride)
        final = min(out - 1, (last - offset) // stride)
        if first > final:
            continue
        # o * stride + offset = 0 (mod lhs_dilate) holds for every period-th o from the
        # first one that does (if one does within a period).
        period = lhs_dilate // math.gcd(stride, lhs_dilate)
        start = next(
            (o for o in range(first, first + period) if (o * stride + offset) % lhs_dilate == 0),
            None,
        )
        if start is not None and start <= final:
            count += (final - start) // period + 1
    return count


def _first_array(shape: str) -> str:
    return next(_elements(shape), "")


def _flops(computation: _Computation, inst: _Instruction) -> int:
    """2 * multiply-adds of a dot, a convolution or a GEMM / convolution custom-call."""
    if inst.opcode == "dot":
        out, lhs = _dims(inst.shape), _dims(_operand_shape(computation, inst, 0))
        contracting = _integers(_attribute(inst, "lhs_contracting_dims"))
        if out is None or lhs is None or any(d >= len(lhs) for d in contracting):
            return 0
        return 2 * math.prod(out) * math.prod(lhs[d] for d in contracting)
    if inst.opcode == "convolution":
        lhs, kernel = (_operand_shape(computation, inst, i) for i in range(2))
        return _conv_flops(inst, lhs, kernel, inst.shape)
    if inst.opcode != "custom-call":
        return 0
    target = _attribute(inst, "custom_call_target") or ""
    if target.startswith("__cublas$"):
        out, lhs = _dims(_first_array(inst.shape)), _dims(_operand_shape(computation, inst, 0))
        found = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', inst.backend_config)
        contracting = _integers(found.group(1)) if found else []
        if out is None or lhs is None or any(d >= len(lhs) for d in contracting):
            return 0
        return 2 * math.prod(out) * math.prod(lhs[d] for d in contracting)
    if target.startswith("__cudnn$conv"):
        # The window and dim_labels describe the forward convolution (input, kernel ->
        # output); the backward ones take or return its three arrays in other places.
        result = _first_array(inst.shape)
        operand = [_operand_shape(computation, inst, i) for i in range(2)]
        if "BackwardInput" in target:
            lhs, kernel, output = result, operand[1], operand[0]
        elif "BackwardFilter" in target:
            lhs, kernel, output = operand[0], result, operand[1]
        else:
            lhs, kernel, output = operand[0], operand[1], result
        return _conv_flops(inst, lhs, kernel, output)
    return 0


def _collective(
    computation: _Computation, inst: _Instruction
) -> tuple[tuple[str, tuple[int, int]], ...]:
    """(kind, (1, result bytes)) for a collective or the `-start` of one, else ()."""
    kind = inst.opcode.removesuffix("-start")
    if kind not in _COLLECTIVES:
        return ()
    shape = inst.shape
    if inst.opcode.endswith("-start"):
        done = next(
            (
                other
                for other in computation.instructions
                if other.opcode == f"{kind}-done" and other.operands[:1] == (inst.name,)
            ),
            None,
        )
        if done is not None:
            shape = done.shape
        elif kind != "all-reduce":
            parts = list(_elements(shape))
            if len(parts) > 1:
                shape = parts[1]
    return ((kind, (1, _bytes(shape))),)


_CYCLES = re.compile(r'"estimated_cycles"\s*:\s*"?(\d+(?:\.\d+)?)')
_EXEC_TIME = re.compile(r'"exec_time_us"\s*:\s*"?([0-9.eE+\-]+)')


def _estimate(backend_config: str, platform: str) -> float | None:
    """The compiler's estimate for one instruction: TPU cycles or GPU microseconds."""
    if not backend_config:
        return None
    if platform == "tpu":
        found = _CYCLES.search(backend_config)
        return float(found.group(1)) if found else None
    if platform == "cpu" or "exec_time_us" not in backend_config:
        return None
    try:
        costs = _find_key(json.loads(backend_config), "reification_cost")
    except ValueError:
        costs = None
    if isinstance(costs, dict):
        costs = [costs]
    if isinstance(costs, list):
        entries = [c for c in costs if isinstance(c, dict) and "exec_time_us" in c]
        unnamed = [c for c in entries if not c.get("name")]
        chosen = (unnamed or entries or [None])[0]
        if chosen is not None:
            try:
                return float(chosen["exec_time_us"])
            except (TypeError, ValueError):
                return None
    found = _EXEC_TIME.search(backend_config)
    try:
        return float(found.group(1)) if found else None
    except ValueError:
        return None


def _find_key(value: object, key: str) -> object:
    """The first value under `key` anywhere in parsed JSON, or None."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        values = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        return None
    for item in values:
        found = _find_key(item, key)
        if found is not None:
            return found
    return None


# ---- trip counts -----------------------------------------------------------------------

_KNOWN_TRIPS = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')


@dataclasses.dataclass(frozen=True)
class _Frame:
    """A computation being read, and where its parameters come from (a fusion's call)."""

    module: _Module
    computation: _Computation
    call: _Instruction | None = None
    caller: _Frame | None = None


def _value(frame: _Frame, name: str, depth: int = 0) -> tuple[str, int] | None:
    """What a scalar is, through copies, converts and fusion parameters:
    ('const', value), ('index', i) for element i of the computation's tuple parameter, or
    ('param', 0) for that parameter itself; None for anything else."""
    inst = frame.computation.by_name.get(name)
    if inst is None or depth > 16:
        return None
    if inst.opcode == "constant":
        numbers = _integers(inst.literal)
        return ("const", numbers[0]) if len(numbers) == 1 else None
    if inst.opcode == "parameter":
        if frame.call is None or frame.caller is None:
            return ("param", 0)
        number = _integers(inst.literal)
        if not number or number[0] >= len(frame.call.operands):
            return None
        return _value(frame.caller, frame.call.operands[number[0]], depth + 1)
    if inst.opcode == "get-tuple-element" and inst.operands:
        source = _value(frame, inst.operands[0], depth + 1)
        index = _integers(_attribute(inst, "index"))
        if source == ("param", 0) and index:
            return ("index", index[0])
        return None
    if inst.opcode in _FORWARD_OPS and inst.operands:
        return _value(frame, inst.operands[0], depth + 1)
    return None


def _comparison(frame: _Frame, inst: _Instruction | None, depth: int = 0):
    """(counter index, direction, bound) of a condition's ROOT compare, or None."""
    if inst is None or depth > 8:
        return None
    if inst.opcode == "fusion":
        called = _names(_attribute(inst, "calls"))
        inner = frame.module.computations.get(called[0]) if called else None
        if inner is None:
            return None
        return _comparison(_Frame(frame.module, inner, inst, frame), inner.root, depth + 1)
    if inst.opcode in ("copy", "convert", "bitcast") and inst.operands:
        return _comparison(frame, frame.computation.by_name.get(inst.operands[0]), depth + 1)
    if inst.opcode != "compare" or len(inst.operands) != 2:
        return None
    direction = (_attribute(inst, "direction") or "").upper()
    left, right = (_value(frame, operand) for operand in inst.operands)
    flipped = {"LT": "GT", "GT": "LT", "LE": "GE", "GE": "LE"}
    if left and right and left[0] == "index" and right[0] == "const":
        return left[1], direction, right[1]
    if left and right and left[0] == "const" and right[0] == "index" and direction in flipped:
        return right[1], flipped[direction], left[1]
    return None


def _trip_count(
    module: _Module, computation: _Computation, inst: _Instruction, condition: str, body: str
) -> int | None:
    """Iterations of one `while` (module docstring), None when they cannot be read."""
    known = _KNOWN_TRIPS.search(inst.backend_config)
    if known:
        return int(known.group(1))
    cond = module.computations.get(condition)
    if cond is None:
        return None
    found = _comparison(_Frame(module, cond), cond.root)
    if found is None:
        return None
    index, direction, bound = found
    start = _start(_Frame(module, computation), inst, index)
    step = _step(module, module.computations.get(body), index)
    if step == 0:
        return None
    if direction in ("LT", "LE") and step > 0:
        span = bound - start + (1 if direction == "LE" else 0)
        return max(0, -(-span // step))
    if direction in ("GT", "GE") and step < 0:
        span = start - bound + (1 if direction == "GE" else 0)
        return max(0, -(-span // -step))
    return None


def _start(frame: _Frame, inst: _Instruction, index: int) -> int:
    """The counter's initial value in the while's init tuple; 0 when it cannot be read."""
    init = frame.computation.by_name.get(inst.operands[0]) if inst.operands else None
    if init is None or init.opcode != "tuple" or index >= len(init.operands):
        return 0
    value = _value(frame, init.operands[index])
    return value[1] if value and value[0] == "const" else 0


def _step(module: _Module, body: _Computation | None, index: int) -> int:
    """What the body adds to the counter each trip; 1 when it cannot be read."""
    root = body.root if body else None
    if root is None or root.opcode != "tuple" or index >= len(root.operands):
        return 1
    update = body.by_name.get(root.operands[index])
    if update is None or update.opcode not in ("add", "subtract") or len(update.operands) != 2:
        return 1
    frame = _Frame(module, body)
    left, right = (_value(frame, operand) for operand in update.operands)
    if left == ("index", index) and right and right[0] == "const":
        return right[1] if update.opcode == "add" else -right[1]
    if update.opcode == "add" and right == ("index", index) and left and left[0] == "const":
        return left[1]
    return 1
