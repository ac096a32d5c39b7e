"""The compile targets, named as their users name them, with the hardware facts the reports use.

TPU slices follow Cloud TPU's accelerator types: the number after the dash counts TensorCores
for v4 and v5p (two per chip, run as one "megacore" device) and chips for v5e and v6e; a
`2x` prefix is a multi-slice job (`2xv5e-256`: two 256-chip slices over the data-centre
network). GPUs are named by model and count: `h100` (one GPU), `h100x8` (one 8-GPU host),
`h100x16` (two hosts). `python -m experiments.aot --target=list` prints every name.

Every figure is written down with its source in `CHIPS`. The clock of a TPU is not published
for every generation; it is derived as peak bf16 FLOP/s / (2 x the MXU multiply-accumulates per
cycle), which gives the published 1050 MHz for v4; it turns the compiler's
`estimated_cycles` into seconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

from pixel_rnn_jax.errors import ConfigError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip (or GPU), as the reports need it."""

    name: str  # as `device_kind` reports it, e.g. 'TPU v5 lite'
    platform: str  # 'tpu' or 'gpu': what `model.schedule='auto'` resolves for
    memory_bytes: int  # high-bandwidth memory per chip
    peak_bf16_flops: float  # dense bf16 FLOP/s per chip
    clock_hz: float | None  # the clock the compiler's cycle estimates count (TPU only)
    source: str  # where the figures come from


# TPU chips: Cloud TPU's "System architecture" pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e); GPUs: NVIDIA's data sheets (dense bf16 tensor-core throughput, i.e. without the 2:4
# sparsity that the headline figures assume).
CHIPS: dict[str, Chip] = {
    "v4": Chip(
        "TPU v4",
        "tpu",
        32 * GIB,
        275e12,
        275e12 / (2 * 2 * 4 * 128 * 128),  # 2 TensorCores x 4 MXUs of 128x128: 1.05 GHz
        "cloud.google.com/tpu/docs/v4: 32 GiB HBM2, 275 TFLOP/s bf16, 2 TensorCores of 4 MXUs",
    ),
    "v5e": Chip(
        "TPU v5 lite",
        "tpu",
        16 * GIB,
        197e12,
        197e12 / (2 * 1 * 4 * 128 * 128),  # 1 TensorCore x 4 MXUs of 128x128: 1.50 GHz
        "cloud.google.com/tpu/docs/v5e: 16 GiB HBM2, 197 TFLOP/s bf16, 1 TensorCore of 4 MXUs",
    ),
    "v5p": Chip(
        "TPU v5",
        "tpu",
        95 * GIB,
        459e12,
        459e12 / (2 * 2 * 4 * 128 * 128),  # 2 TensorCores x 4 MXUs of 128x128: 1.75 GHz
        "cloud.google.com/tpu/docs/v5p: 95 GiB HBM2e, 459 TFLOP/s bf16, 2 TensorCores of 4 MXUs",
    ),
    "v6e": Chip(
        "TPU v6 lite",
        "tpu",
        32 * GIB,
        918e12,
        None,  # the MXU count per TensorCore is not published: cycles are not turned to seconds
        "cloud.google.com/tpu/docs/v6e: 32 GiB HBM, 918 TFLOP/s bf16, 256x256 MXUs",
    ),
    "a100": Chip(
        "NVIDIA A100-SXM4-80GB",
        "gpu",
        81920 * 2**20,  # as nvidia-smi reports it
        312e12,
        None,
        "NVIDIA A100 data sheet: 80 GB HBM2e, 2.04 TB/s, 312 TFLOP/s bf16 dense (SXM)",
    ),
    "h100": Chip(
        "NVIDIA H100 80GB HBM3",
        "gpu",
        81559 * 2**20,  # as nvidia-smi reports it
        989e12,
        None,
        "NVIDIA H100 data sheet: 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s bf16 dense (SXM)",
    ),
    "h200": Chip(
        "NVIDIA H200",
        "gpu",
        140 * GIB,
        989e12,
        None,
        "NVIDIA H200 data sheet: 141 GB HBM3e, 4.8 TB/s, 989 TFLOP/s bf16 dense (SXM)",
    ),
    "b200": Chip(
        "NVIDIA B200",
        "gpu",
        180 * GIB,
        2.25e15,
        None,
        "NVIDIA DGX B200 data sheet: 1,440 GB over 8 GPUs, 8 TB/s, 2.25 PFLOP/s bf16 dense",
    ),
}

# Cloud TPU slice sizes (the number in the accelerator type) and their chip grids. v4 and v5p
# count TensorCores (chips = n / 2) on a 3-D torus, v5e and v6e count chips on a 2-D one.
_MEGACORE_GRIDS = {8: (2, 2, 1), 16: (2, 2, 2), 32: (2, 2, 4), 64: (2, 4, 4), 128: (4, 4, 4)}
_LITE_GRIDS = {
    1: (1, 1),
    4: (2, 2),
    8: (2, 4),
    16: (4, 4),
    32: (4, 8),
    64: (8, 8),
    128: (8, 16),
    256: (16, 16),
}
_TPU_GRIDS: dict[str, dict[int, tuple[int, ...]]] = {
    "v4": _MEGACORE_GRIDS,
    "v5p": _MEGACORE_GRIDS,
    "v5e": _LITE_GRIDS,
    "v6e": _LITE_GRIDS,
}
_ALIASES = {"v5litepod": "v5e", "v6litepod": "v6e"}
_GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64)
GPUS_PER_HOST = 8  # an HGX/DGX host


@dataclasses.dataclass(frozen=True)
class Target:
    """A slice or a set of GPUs: what to compile for and how the runner would lay it out."""

    name: str  # canonical: 'v5e-8', '2xv5e-256', 'h100x8'
    chip_key: str  # the key in `CHIPS`: 'v5e', 'h100'
    chips: int  # over every slice
    hosts: int  # processes the runner would start (one per host)
    slices: int = 1
    topology: str = ""  # TPU: 'v5e:2x4'; GPU: 'partitions x hosts x GPUs per host'
    megacore: bool = False  # TPU v4/v5p: two TensorCores per chip, one device
    chips_per_host: tuple[int, ...] = ()  # TPU: the host's block of the chip grid

    @property
    def chip(self) -> Chip:
        return CHIPS[self.chip_key]

    @property
    def platform(self) -> str:
        return self.chip.platform

    @property
    def memory_bytes(self) -> int:
        return self.chip.memory_bytes

    def describe(self) -> str:
        slices = f"{self.slices} slices, " if self.slices > 1 else ""
        return (
            f"{self.name}: {slices}{self.chips} x {self.chip.name} on {self.hosts} host(s), "
            f"{self.memory_bytes / GIB:.0f} GiB and {self.chip.peak_bf16_flops / 1e12:.0f} "
            "TFLOP/s bf16 per chip"
        )


def _tpu(generation: str, size: int, slices: int) -> Target:
    grid = _TPU_GRIDS[generation][size]
    megacore = generation in ("v4", "v5p")
    chips = size // 2 if megacore else size
    # Hosts: 4 chips each (a 2x2 block), except the single-host v5e/v6e slices of up to 8.
    single_host = not megacore and chips <= 8
    per_host = grid + (1,) * (3 - len(grid)) if single_host else (2, 2, 1)
    hosts = chips // (per_host[0] * per_host[1] * per_host[2])
    prefix = f"{slices}x" if slices > 1 else ""
    return Target(
        name=f"{prefix}{generation}-{size}",
        chip_key=generation,
        chips=chips * slices,
        hosts=hosts * slices,
        slices=slices,
        topology=f"{generation}:{'x'.join(map(str, grid))}",
        megacore=megacore,
        chips_per_host=per_host,
    )


def _gpu(model: str, count: int) -> Target:
    per_host = min(count, GPUS_PER_HOST)
    hosts = count // per_host
    return Target(
        name=model if count == 1 else f"{model}x{count}",
        chip_key=model,
        chips=count,
        hosts=hosts,
        topology=f"1x{hosts}x{per_host}",
    )


def chip_for_device_kind(device_kind: str) -> Chip | None:
    """The chip a device reports itself as (`jax.Device.device_kind`), or None."""
    return next((chip for chip in CHIPS.values() if chip.name == device_kind), None)


def all_names() -> list[str]:
    """Every target name `parse` accepts (multi-slice: any `Nx` prefix on a TPU slice)."""
    names = [f"{g}-{n}" for g, sizes in _TPU_GRIDS.items() for n in sizes]
    names += ["2xv5e-256", "2xv6e-256", "2xv4-128", "2xv5p-128"]
    gpus = [m for m, chip in CHIPS.items() if chip.platform == "gpu"]
    names += [m if n == 1 else f"{m}x{n}" for m in gpus for n in _GPU_COUNTS]
    return names


_TPU_NAME = re.compile(r"^(?:(\d+)x)?(v4|v5e|v5p|v6e|v5litepod|v6litepod)-(\d+)$")
_GPU_NAME = re.compile(r"^([a-z]\d+)(?:x(\d+))?$")


def parse(name: str) -> Target:
    """The target called `name` ('v5e-8', 'v5litepod-8', '2xv5e-256', 'v4-32', 'h100x8').

    Raises:
      ConfigError: an unknown name, naming the nearest known ones and `--target=list`.
    """
    text = name.strip().lower()
    match = _TPU_NAME.match(text)
    if match:
        slices, generation, size = match.groups()
        generation = _ALIASES.get(generation, generation)
        if int(size) in _TPU_GRIDS[generation] and (slices is None or int(slices) >= 1):
            return _tpu(generation, int(size), int(slices or 1))
    match = _GPU_NAME.match(text)
    if match and match.group(1) in CHIPS and CHIPS[match.group(1)].platform == "gpu":
        count = int(match.group(2) or 1)
        if count in _GPU_COUNTS:
            return _gpu(match.group(1), count)
    close = difflib.get_close_matches(text, all_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown target {name!r}.{hint} --target=list prints every target this tool knows."
    )


def listing() -> str:
    """Every target, one line each, for `--target=list`."""
    lines = [parse(name).describe() for name in all_names()]
    lines.append("Any TPU slice takes an Nx prefix for N slices (multi-slice), e.g. 4xv5e-256.")
    lines.append("Sources: " + "; ".join(f"{k}: {c.source}" for k, c in CHIPS.items()))
    return "\n".join(lines)
