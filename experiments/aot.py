r"""Compile the runner's programs for a TPU slice or a set of GPUs, here, before renting them.

  python -m experiments.aot --target=v5e-8 --config=diagonal_bilstm_cifar10
  python -m experiments.aot --target=h100x8 --config=row_lstm_mnist --per_chip_batch=max
  python -m experiments.aot --target=2xv5e-256 --config=pixelcnn_cifar10 \
    --config.model.dtype=bfloat16 --per_chip_batch=32 --output=/tmp/aot
  python -m experiments.aot --target=list

Compiles (never runs) the train step, the eval step and the cached sampler exactly as the
runner builds them on the target (`experiments.targets.programs`: its data mesh over every
chip of every host, the state donated, `model.schedule='auto'` resolved for the target's
platform) and writes OUTPUT/report.md, OUTPUT/report.json and each program's optimised HLO.
Per chip: argument, output, temp and peak bytes against the chip's memory, whether it fits
(`--usable_fraction`), the collectives, the loops and their trips, FLOPs, and the step time
the compiler's cost model estimates (every loop body weighted by its trips) plus assumed
launch and loop costs, with images/s and MFU from it: estimates, not measurements.
`--per_chip_batch=max` finds the largest per-chip batch whose train step fits, by compiling.

Needs the `targets` extra (`pip install -e '.[targets]'`: libtpu and the CUDA compiler).
Results are cached by the program's lowered text in `--cache_dir`.
"""

from __future__ import annotations

import math
import pathlib
import shlex
import sys

from absl import flags

from experiments import cli, configs
from experiments.targets import catalog, compiled, programs, report
from experiments.targets import devices as target_devices
from pixel_rnn_jax.errors import ConfigError

_TARGET = flags.DEFINE_string(
    "target", None, "Target names, comma-separated (v5e-8,v4-32,h100x8, ...), or 'list'."
)
_CONFIG = configs.define_config_flag("config")
_CONFIGS = flags.DEFINE_list(
    "configs", [], "Instead of --config: several config names, or 'all' (every non-smoke one)."
)
_PER_CHIP_BATCH = flags.DEFINE_string(
    "per_chip_batch",
    None,
    "Images per chip and step, or 'max' (the largest that fits, found by compiling). Default: "
    "config.train.batch_size split over the chips.",
)
_PROGRAMS = flags.DEFINE_list(
    "programs", list(programs.PROGRAMS), f"Which of {', '.join(programs.PROGRAMS)}."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Report directory; default workdirs/aot/<config>/<target>."
)
_USABLE = flags.DEFINE_float(
    "usable_fraction", compiled.USABLE_FRACTION, "Part of a chip's memory a program may use."
)
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", str(compiled.default_cache_dir()), "Cache of compile results; '' for none."
)
_TOLERANCE = flags.DEFINE_float(
    "search_tolerance", 1 / 8, "--per_chip_batch=max: stop when the bracket is this close."
)
_MAX_COMPILES = flags.DEFINE_integer(
    "max_compiles", 5, "--per_chip_batch=max: at most this many compiles per config and target."
)
_SUMMARISE = flags.DEFINE_string(
    "summarise",
    None,
    "Only write DIR/summary.md and summary.json again from the reports under DIR "
    "(<config>/<target>/report.json, from one or several runs); compiles nothing.",
)
_HLO = flags.DEFINE_bool("hlo", True, "Also write each program's optimised HLO (recompiles).")


def scaled_hint(
    found: dict[str, compiled.LargestBatch], target: catalog.Target
) -> compiled.LargestBatch | None:
    """A first bracket for `target` from another chip's: scaled by the chips' memory.

    Buffer layouts differ between chips (a TPU pads to its tiles), so this is only where the
    search starts; it compiles its way from there.
    """
    for chip_key, largest in found.items():
        if largest.fits >= 1 and largest.does_not_fit is not None:
            ratio = target.memory_bytes / catalog.CHIPS[chip_key].memory_bytes
            fits = max(1, int(largest.fits * ratio))
            return compiled.LargestBatch(
                fits, max(fits + 1, int(largest.does_not_fit * ratio)), 0, fits
            )
    return None


def compile_for_target(
    config,
    config_name: str,
    target: catalog.Target,
    batch_flag: str | None,
    hlo_dir=None,
    hint: compiled.LargestBatch | None = None,
) -> report.Run:
    """The programs of `config` compiled for `target` at the asked per-chip batch.

    `hint`: the largest batch found for the same config on another slice of the same chip.
    """
    batch = programs.per_chip_batch(batch_flag, config, target)
    cache = pathlib.Path(_CACHE_DIR.value) if _CACHE_DIR.value else None
    devices = target_devices.target_devices(target)

    def analyse(program, batch, hlo_dir=None):
        hlo_path = hlo_dir / f"{program.name}.hlo.txt" if hlo_dir else None
        return compiled.analyse(
            program,
            target,
            batch,
            cache_dir=cache,
            hlo_path=hlo_path,
            usable_fraction=_USABLE.value,
        )

    largest = None
    if batch is None:

        def peak_at(n: int) -> float:
            (train_step,) = programs.build(config, target, devices, n, which=("train_step",))
            result = analyse(train_step, n)
            if isinstance(result, compiled.CompileFailure):
                if result.out_of_memory:  # the compiler's own figure steers the search
                    return result.needed_bytes or math.inf
                raise RuntimeError(result.fit_text())
            return result.peak_bytes

        largest = compiled.largest_batch(peak_at, _USABLE.value * target.memory_bytes, hint=hint)
        batch = max(largest.fits, 1)  # none fits: the report says by how much at batch 1
    built = programs.build(config, target, devices, batch, which=_PROGRAMS.value)
    return report.Run(
        config_name=config_name,
        target=target,
        schedule=programs.model_config_for(config.model, target.platform).schedule,
        dtype=config.model.dtype,
        analyses=[analyse(p, batch, hlo_dir) for p in built],
        largest=largest,
        usable_fraction=_USABLE.value,
    )


def main(argv):
    del argv
    target_devices.prepare_environment()  # before jax starts a backend
    if _SUMMARISE.value:
        report.summarise_directory(pathlib.Path(_SUMMARISE.value))
        print((pathlib.Path(_SUMMARISE.value) / "summary.md").read_text())
        return
    if _TARGET.value in (None, ""):
        raise ConfigError("--target is required: a target name, or --target=list to see them.")
    if _TARGET.value == "list":
        print(catalog.listing())
        return
    targets = [catalog.parse(name) for name in _TARGET.value.split(",")]
    unknown = sorted(set(_PROGRAMS.value) - set(programs.PROGRAMS))
    if unknown:
        raise ConfigError(f"--programs: unknown {unknown}; choose from {list(programs.PROGRAMS)}.")
    if (_CONFIG.value is None) == (not _CONFIGS.value):
        raise ConfigError("Give either --config=NAME (with overrides) or --configs=A,B|all.")
    if _CONFIG.value is not None:
        runs = [(configs.flag_run_dirs(None)[0], _CONFIG.value)]
    else:
        names = configs.list_configs() if _CONFIGS.value == ["all"] else _CONFIGS.value
        if _CONFIGS.value == ["all"]:
            names = [n for n in names if not n.endswith("_smoke")]
        runs = [(name, configs.get_config(name)) for name in names]  # unknown names fail here
    for target in targets:
        target_devices.check_compiler(target.platform)
    for _, config in runs:  # batches that do not split fail before any compile
        for target in targets:
            programs.per_chip_batch(_PER_CHIP_BATCH.value, config, target)
    single = len(runs) * len(targets) == 1
    default = f"workdirs/aot/{runs[0][0]}/{targets[0].name}" if single else "workdirs/aot"
    output = pathlib.Path(_OUTPUT.value or default)
    command = "python -m experiments.aot " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = []
    for config_name, config in runs:
        found = {}  # chip -> the largest batch found on a slice of it
        for target in targets:
            hint = found.get(target.chip_key) or scaled_hint(found, target)
            where = output if single else output / config_name / target.name
            run = compile_for_target(
                config,
                config_name,
                target,
                _PER_CHIP_BATCH.value,
                hlo_dir=where / "hlo" if _HLO.value else None,
                hint=hint,
            )
            if run.largest is not None:
                found[target.chip_key] = run.largest
            report.write(where, run, command=command)
            results.append(run)
            print((where / "report.md").read_text(), flush=True)
    if not single:
        report.write_summary(output, results, command=command)
        print((output / "summary.md").read_text())


if __name__ == "__main__":
    cli.run(main)
