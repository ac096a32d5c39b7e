"""One program compiled for one target, and what the compiler says about it.

Nothing here runs a program. `analyse` lowers it, compiles it for the target's devices and
reads: the memory plan per chip (`memory_analysis()`), the loops (from the jaxpr, by
`experiments.benchmarks.loops`, and from the optimised HLO, by `hlo.summarize`, which must
agree), the collectives, the FLOPs and the estimated step time (`estimate`: the compiler's
cost estimates, each loop body weighted by its trips, plus assumed launch and loop costs).
Every number derived from the estimate is labelled an estimate in the reports.

Compiling is the cost (a 12-layer CIFAR Diagonal BiLSTM takes a minute), so what a compile
gives (its memory plan and its optimised HLO, gzipped) is cached on disk, keyed by the target,
the program's lowered text and the compiler versions; the HLO is read again on every call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Callable
from typing import Any

import jax

from experiments.targets import estimate, hlo
from experiments.targets.catalog import Target
from experiments.targets.programs import Program

USABLE_FRACTION = 0.9  # of a chip's memory a step may plan for (as `benchmarks.memory`)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What the compiler says about one program on one target (per chip unless named)."""

    program: str
    target: str
    per_chip_batch: int
    images: int  # per call over the chips it runs on
    chips: int
    compile_seconds: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    peak_bytes: int
    memory_bytes: int  # the chip's
    usable_fraction: float
    loop_trips: int  # from the jaxpr
    dependent_steps: int
    hlo_loop_trips: int  # from the optimised HLO
    unknown_trip_counts: int
    flops: float  # per chip per call, trip-weighted
    collectives: list[dict[str, Any]]
    launched_ops: int
    unestimated_ops: int
    compiler_seconds: float  # the compiler's estimate of the work (nan where it has none)
    overhead_seconds: float  # the assumed launch and loop costs (OVERHEAD_S)
    peak_bf16_flops: float

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.usable_fraction * self.memory_bytes

    @property
    def estimated_seconds(self) -> float:
        return self.compiler_seconds + self.overhead_seconds

    @property
    def images_per_second_per_chip(self) -> float:
        return self.images / self.chips / self.estimated_seconds

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation the estimate implies, against the chip's bf16 peak."""
        return self.flops / self.estimated_seconds / self.peak_bf16_flops

    def fit_text(self) -> str:
        usable = self.usable_fraction * self.memory_bytes
        if self.fits:
            return f"fits: {self.peak_bytes / 2**30:.2f} of {usable / 2**30:.1f} GiB"
        return f"does not fit: needs {self.peak_bytes / 2**30:.2f} of {usable / 2**30:.1f} GiB"

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row.update(
            fits=self.fits,
            estimated_seconds=self.estimated_seconds,
            images_per_second_per_chip=self.images_per_second_per_chip,
            estimated_mfu=self.mfu,
        )
        return row


_NEEDED = re.compile(r"\((\d+(?:\.\d+)?)([KMGT])\) exceeds|Used (\d+(?:\.\d+)?)([KMGT]) of")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclasses.dataclass(frozen=True)
class CompileFailure:
    """A program the target's compiler refused, with the compiler's message."""

    program: str
    target: str
    per_chip_batch: int
    message: str

    @property
    def out_of_memory(self) -> bool:
        return self.message.startswith("RESOURCE_EXHAUSTED")

    @property
    def needed_bytes(self) -> float | None:
        """What the compiler said the program needs, where its message says (TPU: "the total
        memory required for HLO temporaries (135.62G) exceeds ...", "Used 20.5G of ...")."""
        match = _NEEDED.search(self.message)
        if match is None:
            return None
        return float(match.group(1) or match.group(3)) * _UNITS[match.group(2) or match.group(4)]

    def fit_text(self) -> str:
        if self.out_of_memory:
            return f"does not fit: the compiler ran out of memory ({self.message})"
        return f"does not compile for {self.target}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), fits=False, out_of_memory=self.out_of_memory)


def compiler_versions() -> str:
    """The compilers that made a cached result (a new version recompiles)."""
    names = ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt")
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name}=={importlib.metadata.version(name)}")
    return ",".join(found)


def default_cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "pixel_rnn_jax" / "aot"


def compile_program(program: Program, target: Target) -> tuple[jax.stages.Compiled, str, float]:
    """(compiled executable, optimised HLO text, compile seconds)."""
    lowered = program.fn.lower(*program.args)
    options = estimate.GPU_COMPILER_OPTIONS if target.platform == "gpu" else None
    start = time.perf_counter()
    compiled = lowered.compile(options) if options else lowered.compile()
    return compiled, compiled.as_text(), time.perf_counter() - start


def _lowered_key(program: Program, target: Target) -> str:
    text = program.fn.lower(*program.args).as_text()
    digest = hashlib.sha256()
    for part in (target.name, program.name, compiler_versions(), text):
        digest.update(part.encode())
    return digest.hexdigest()[:32]


def analyse(
    program: Program,
    target: Target,
    per_chip_batch: int,
    *,
    cache_dir: pathlib.Path | None = None,
    hlo_path: pathlib.Path | None = None,
    usable_fraction: float = USABLE_FRACTION,
) -> Analysis | CompileFailure:
    """Compiles `program` for `target` (or reads the cached result) and reports on it.

    A program the target's compiler refuses (out of memory, or a device assignment the
    target cannot run) is a finding, not an error: a `CompileFailure` with its message.

    Args:
      program: from `programs.build`.
      target: the target its arguments are placed on.
      per_chip_batch: for the report.
      cache_dir: where results are cached (None: no cache).
      hlo_path: write the optimised HLO there (compiles even if cached).
      usable_fraction: of the chip's memory.
    """
    key = _lowered_key(program, target)
    cached = cache_dir / f"{key}.json" if cache_dir else None
    cached_hlo = cache_dir / f"{key}.hlo.gz" if cache_dir else None
    if cached and cached.is_file() and (cached_hlo.is_file() or "failure" in cached.read_text()):
        compile_row = json.loads(cached.read_text())
        text = gzip.decompress(cached_hlo.read_bytes()).decode() if cached_hlo.is_file() else ""
    else:
        try:
            executable, text, seconds = compile_program(program, target)
        except jax.errors.JaxRuntimeError as error:
            compile_row, text = {"failure": str(error).strip().splitlines()[0][:500]}, ""
        else:
            compile_row = _compile_facts(executable, seconds)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            if text:
                cached_hlo.write_bytes(gzip.compress(text.encode(), compresslevel=6))
            cached.write_text(json.dumps(compile_row))
    if hlo_path is not None and text:
        hlo_path.parent.mkdir(parents=True, exist_ok=True)
        hlo_path.write_text(text)
    row = compile_row if "failure" in compile_row else _measure(program, target, compile_row, text)
    if "failure" in row:
        return CompileFailure(program.name, target.name, per_chip_batch, row["failure"])
    return Analysis(
        program=program.name,
        target=target.name,
        per_chip_batch=per_chip_batch,
        images=program.images,
        chips=program.chips,
        memory_bytes=target.memory_bytes,
        usable_fraction=usable_fraction,
        peak_bf16_flops=target.chip.peak_bf16_flops,
        **row,
    )


def _compile_facts(executable, seconds: float) -> dict[str, Any]:
    """What only the compile knows (cached beside the optimised HLO)."""
    memory = executable.memory_analysis()
    return {
        "compile_seconds": seconds,
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "alias_bytes": int(memory.alias_size_in_bytes),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "peak_bytes": int(memory.peak_memory_in_bytes),
    }


def _measure(program: Program, target: Target, compile_row: dict, text: str) -> dict:
    """Everything an `Analysis` reports but the target: the compile's facts, then what its
    HLO and the program's jaxpr say (read again on every call: the cache keeps the HLO, so
    a better reading of it never needs a recompile)."""
    summary = hlo.summarize(text, platform=target.platform, clock_hz=target.chip.clock_hz)
    count = program.loop_count()
    return {
        **compile_row,
        "loop_trips": count.loop_trips,
        "dependent_steps": count.dependent_steps,
        "hlo_loop_trips": summary.loop_trips,
        "unknown_trip_counts": summary.unknown_trip_counts,
        "flops": summary.flops,
        "collectives": [dataclasses.asdict(c) for c in summary.collectives],
        "launched_ops": summary.launched_ops,
        "unestimated_ops": summary.unestimated_ops,
        "compiler_seconds": summary.estimated_seconds,
        "overhead_seconds": estimate.overhead_seconds(summary, target.platform),
    }


@dataclasses.dataclass(frozen=True)
class LargestBatch:
    """The largest per-chip batch that fits, bracketed by compiles."""

    fits: int  # compiled and fits (0: not even batch 1)
    does_not_fit: int | None  # compiled and does not fit (None: never found)
    compiles: int
    predicted: int  # from the linear fit of the first two compiles

    def text(self) -> str:
        if self.does_not_fit is None:
            return f">= {self.fits}"
        if self.does_not_fit == self.fits + 1:
            return f"{self.fits}"
        return f"{self.fits} (< {self.does_not_fit})"


def largest_batch(
    peak_at: Callable[[int], int],
    usable_bytes: float,
    *,
    first: int = 8,
    max_compiles: int = 7,
    tolerance: float = 1 / 16,
    hint: LargestBatch | None = None,
) -> LargestBatch:
    """The largest per-chip batch whose train step fits in `usable_bytes`, found by compiling.

    Peak memory grows about linearly with the batch (the activations), but not exactly (a
    TPU pads to its tiles, buffers get reused differently): so each guess comes from the line
    through the two compiled batches nearest the limit (a secant search), starting from
    `first` and `2 * first`, until a batch that fits and one that does not are within
    `tolerance` of each other, or after `max_compiles` compiles.

    Args:
      peak_at: per-chip batch -> peak bytes per chip (compiles).
      usable_bytes: the budget.
      first: the first batch tried.
      max_compiles: at most this many compiles.
      tolerance: stop when `does_not_fit - fits <= max(1, tolerance * fits)`.
      hint: the answer for a program of about the same size (the same config on another
        slice of the same chip): its bracket is compiled first, and when it still brackets,
        two compiles are all the search costs.
    """
    peaks: dict[int, int] = {}

    def peak(batch: int) -> int:
        if batch not in peaks:
            peaks[batch] = peak_at(batch)
        return peaks[batch]

    def line_guess(a: int, b: int) -> int:
        per_image = max((peak(b) - peak(a)) / (b - a), 1.0)
        return math.floor(a + (usable_bytes - peak(a)) / per_image)

    if hint is not None and hint.fits >= 1 and hint.does_not_fit is not None:
        predicted = max(0, line_guess(hint.fits, hint.does_not_fit))
    else:
        peak(first)
        predicted = max(0, line_guess(first, 2 * first))
    while len(peaks) < max_compiles:
        lo = max([n for n, p in peaks.items() if p <= usable_bytes], default=0)
        hi = min([n for n, p in peaks.items() if p > usable_bytes], default=None)
        if hi is not None and hi - lo <= max(1, tolerance * lo):
            break
        if hi is None:  # the two largest batches so far
            a, b = sorted(peaks)[-2:]
        elif lo == 0:  # the two smallest that do not fit
            a, b = sorted(peaks)[:2]
        else:
            a, b = lo, hi
        guess = line_guess(a, b)
        if hi is None:  # no batch too big yet: go to the line's limit (at most 16x), or beyond lo
            guess = min(max(guess, lo + max(1, int(tolerance * lo / 2))), 16 * max(lo, 1))
        else:  # aim a little low, so that a batch that fits closes the bracket
            guess = int(guess * (1 - tolerance / 2))
            near_lo = guess <= lo + tolerance * lo / 2  # a secant creeping up: bisect
            if near_lo or guess >= hi or guess in peaks:
                guess = (lo + hi) // 2
        if guess < 1 or guess in peaks:
            break
        peak(guess)
    lo = max([n for n, p in peaks.items() if p <= usable_bytes], default=0)
    hi = min([n for n, p in peaks.items() if p > usable_bytes], default=None)
    return LargestBatch(lo, hi, len(peaks), predicted)
