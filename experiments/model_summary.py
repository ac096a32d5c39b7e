"""Parameter counts of the named experiments' models, the loops of their train step under
each schedule, and its memory plan.

python -m experiments.model_summary                      # every non-smoke config
python -m experiments.model_summary --configs=row_lstm_mnist,pixelcnn_cifar10
python -m experiments.model_summary --nomemory           # no memory plan
python -m experiments.model_summary --nomemory --nosteps # parameter counts only

The loop trips are the total trip count of the train step's loops, forward and backward,
and the dependent steps the longest chain of recurrence steps (what unrolling cannot
remove), both read from its program (`experiments.benchmarks.loops`; traced, not
compiled), at the dataset's image size under `model.schedule` 'throughput' and 'latency'.
python -m experiments.model_summary --output=benchmark_results/cpu_memory_plan

The memory plan compiles (never runs) the runner's train step of every config at its
dataset's image size for float32 / bfloat16 x remat / no remat, reads `memory_analysis()`
and fits peak memory = fixed + per-device batch x per image; it then gives the largest
per-device batch that fits in each of `--capacities_gb` (`experiments.benchmarks.memory`).
On a CPU the numbers come from XLA:CPU's buffer assignment: how far they carry to a GPU or
TPU is in WORKSPACE_NOTES.md ("Memory planning").
"""

import json
import os
import time

import ml_collections
from absl import flags

from experiments import cli, configs
from experiments.benchmarks import loops, memory, runner_step, scan
from experiments.targets import devices as target_devices
from pixel_rnn_jax import data, errors, models
from pixel_rnn_jax.nn import recurrence

_CONFIGS = flags.DEFINE_list("configs", None, "Config names; default: all non-smoke configs.")
_MEMORY = flags.DEFINE_bool("memory", True, "Also compile each train step for its memory plan.")
_STEPS = flags.DEFINE_bool("steps", True, "Also count each train step's loops.")
_VARIANTS = flags.DEFINE_list(
    "variants",
    [f"{dtype}:{int(remat)}" for dtype, remat in memory.VARIANTS],
    "dtype:remat pairs of the memory plan (remat 0 or 1).",
)
_BATCHES = flags.DEFINE_list("batches", ["1", "2"], "The two per-device batches of the fit.")
_CAPACITIES = flags.DEFINE_list(
    "capacities_gb", [str(c) for c in memory.CAPACITIES_GB], "Device memory sizes (1e9 bytes)."
)
_USABLE = flags.DEFINE_float(
    "usable_fraction", memory.USABLE_FRACTION, "Part of a device's memory the step may use."
)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the plan to OUTPUT.md and OUTPUT.json.")
_TARGETS = flags.DEFINE_list(
    "targets",
    [],
    "Also fit the plan from the train step compiled for one chip of each target (e.g. "
    "v5e-1,h100; needs the `targets` extra), at --target_batches.",
)
_TARGET_BATCHES = flags.DEFINE_list(
    "target_batches", ["8", "16"], "The two per-chip batches of the targets' fits."
)


def parameter_table(names) -> str:
    lines = ["| config | model | layers | h | channels | levels | parameters |"]
    lines.append("|---|---|---|---|---|---|---|")
    for name in names:
        m = configs.get_config(name).model
        count = models.count_parameters(m)
        lines.append(
            f"| {name} | {m.name} | {m.num_layers} | {m.hidden_dim} | {m.num_channels} | "
            f"{m.num_levels} | {count:,} |"
        )
    return "\n".join(lines)


def steps_table(names) -> str:
    """Loop trips (loops) / dependent steps of each config's train step per schedule."""
    columns = " | ".join(
        f"{schedule}: loop trips (loops) / dependent steps" for schedule in recurrence.SCHEDULES
    )
    lines = [f"| config | image | {columns} |", "|---|---|" + "---|" * len(recurrence.SCHEDULES)]
    for name in names:
        config = configs.get_config(name)
        shape = data.KNOWN_DATASETS[config.data.name].image_shape
        cells = []
        for schedule in recurrence.SCHEDULES:
            model_config = ml_collections.ConfigDict(config.model.to_dict())
            model_config.schedule = schedule
            model = models.build_model(model_config)
            args = runner_step.abstract_runner_train_step(
                model, model_config.num_levels, (1, *shape)
            )
            count = loops.count_loops(*args)
            cells.append(f"{count.loop_trips:,} ({count.loops}) / {count.dependent_steps:,}")
        lines.append(f"| {name} | {'x'.join(map(str, shape))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_plan(names) -> list[dict]:
    """One row per (config, variant); a config that fails to compile gets an 'error' row."""
    batches = tuple(int(b) for b in _BATCHES.value)
    capacities = [float(c) for c in _CAPACITIES.value]
    rows, planned = [], {}
    for name in names:
        config = configs.get_config(name)
        shape = data.KNOWN_DATASETS[config.data.name].image_shape
        for variant in _VARIANTS.value:
            dtype, remat = variant.split(":")
            key = {"config": name, "image": "x".join(map(str, shape)), "dtype": dtype}
            key["remat"] = remat == "1"
            # Configs with the same model at the same image size (CIFAR-10 and ImageNet 32)
            # compile the same program: plan it once.
            same = json.dumps([config.model.to_dict(), shape, variant], sort_keys=True, default=str)
            if same in planned:
                rows.append({**planned[same], **key, "same_as": planned[same]["config"]})
                line = memory.markdown([rows[-1]], capacities, _TARGETS.value).splitlines()[-1]
                print(line, flush=True)
                continue
            try:
                row = memory.plan_row(
                    config.model,
                    shape,
                    dtype,
                    key["remat"],
                    batches=batches,
                    capacities_gb=capacities,
                    usable_fraction=_USABLE.value,
                )
            except Exception as error:  # noqa: BLE001 - one failing config must not end the plan
                row = {**key, "error": f"{type(error).__name__}: {error}"[:200]}
            if _TARGETS.value and "error" not in row:
                row["targets"] = target_plans(config, dtype, key["remat"])
            rows.append({**key, **row})
            planned[same] = rows[-1]
            line = memory.markdown([rows[-1]], capacities, _TARGETS.value).splitlines()[-1]
            print(line, flush=True)
    return rows


def target_plans(config, dtype: str, remat: bool) -> dict[str, dict]:
    """`memory.target_plan` for every `--targets` name (an error row where one fails)."""
    batches = tuple(int(b) for b in _TARGET_BATCHES.value)
    plans = {}
    for name in _TARGETS.value:
        try:
            plans[name] = memory.target_plan(
                config, dtype, remat, name, batches=batches, usable_fraction=_USABLE.value
            )
        except errors.UserError:
            raise  # an unknown target or a missing extra: the same for every row
        except Exception as error:  # noqa: BLE001 - one failing compile must not end the plan
            plans[name] = {"error": f"{type(error).__name__}: {error}"[:200]}
    return plans


def main(argv):
    del argv
    if _TARGETS.value:  # before JAX starts a backend: compiles for TPUs and GPUs from here
        target_devices.prepare_environment()
    # Before JAX starts its backend: on a CPU, remat would otherwise save nothing here.
    memory.keep_remat_barriers()
    names = _CONFIGS.value or [n for n in configs.list_configs() if not n.endswith("_smoke")]
    print(parameter_table(names))
    if _STEPS.value:
        print("\nLoops of the train step (forward and backward):\n")
        print(steps_table(names), flush=True)
    if not _MEMORY.value:
        return
    start = time.perf_counter()
    capacities = [float(c) for c in _CAPACITIES.value]
    print(f"\nMemory plan (per-device batch; usable fraction {_USABLE.value:g}):\n")
    print("\n".join(memory.markdown([], capacities, _TARGETS.value).splitlines()[:2]), flush=True)
    rows = memory_plan(names)
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
        header = {
            "machine": scan.machine_info(),
            "wall_s": time.perf_counter() - start,
            "batches": _BATCHES.value,
            "usable_fraction": _USABLE.value,
            "capacities_gb": capacities,
        }
        with open(_OUTPUT.value + ".json", "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
            f.write("\n")
        with open(_OUTPUT.value + ".md", "w") as f:
            f.write("# Memory plan of the runner's train step (compile only)\n\n")
            f.write(f"- machine: {header['machine']}\n- wall s: {header['wall_s']:.0f}\n\n")
            f.write(memory.markdown(rows, capacities, _TARGETS.value) + "\n")


if __name__ == "__main__":
    cli.run(main)
