r"""Coverage-guided fuzzing of the readers of outside bytes (atheris, i.e. libFuzzer).

  python -m experiments.fuzz --target=prnn|payload|png|idx|amat|cifar|archive|checkpoint \
      --seconds=N [--rss_limit_mb=M] [--timeout_s=T] [--corpus=DIR] [--artifacts=DIR]
  nice -n 10 python -m experiments.fuzz --campaign=prnn,png,idx --seconds=N \
      --report=benchmark_results/fuzz.json

One target: seeds are written by the project itself into a temporary corpus (or --corpus),
the target's modules are instrumented, and libFuzzer mutates inputs for --seconds. The
property of every input (`experiments.fuzzing.targets`): the reader returns the right
result or raises the project's own error; another exception is a crash, an input that runs
past --timeout_s is a hang, and a process above --rss_limit_mb is out of memory. libFuzzer
then stops and writes the input under --artifacts (crash-*, timeout-*, oom-*): keep it as a
regression test under tests/. Needs the `fuzz` extra (`pip install atheris`).

--campaign runs the named targets one after the other, each in its own child process (so
one's memory never counts against another's), and writes executions, exec/s, coverage
(libFuzzer's `cov:` edges of the instrumented code), the peak RSS (the child's ru_maxrss)
and any crash input to --report (JSON); the logs go to scratch/fuzz/ beside it.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from experiments import cli
from experiments.fuzzing import targets

_TARGET = flags.DEFINE_enum("target", None, sorted(targets.TARGETS), "The reader to fuzz.")
_CAMPAIGN = flags.DEFINE_list("campaign", None, "Targets to fuzz in turn, one child each.")
_SECONDS = flags.DEFINE_integer("seconds", 60, "Fuzzing time per target.")
_RSS = flags.DEFINE_integer("rss_limit_mb", 2048, "Memory bound: libFuzzer's -rss_limit_mb.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 10, "An input running longer is a hang.")
_CORPUS = flags.DEFINE_string("corpus", None, "Corpus directory (default: a temporary one).")
_ARTIFACTS = flags.DEFINE_string("artifacts", None, "Where crash inputs go (default: cwd).")
_REPORT = flags.DEFINE_string("report", None, "--campaign: the JSON report.")


# Functions whose comparisons are numpy arrays: atheris 3.0's comparison tracing leaks
# about 170 bytes per such comparison (seen: `np.zeros(n) == 0` in a loop grows the RSS,
# `.__eq__` does not), which would read as the reader's memory. Only their branches are
# instrumented.
_ARRAY_COMPARISONS = frozenset({"pixel_rnn_jax.data.formats.read_amat"})


def _instrument(module_names):
    """Adds atheris's coverage instrumentation to every function of the named modules.

    Branches and comparisons (which guide mutations toward magic numbers and sizes) are
    traced, except comparisons in `_ARRAY_COMPARISONS`.
    """
    import importlib
    import inspect

    from atheris import instrument_bytecode

    for name in module_names:
        module = importlib.import_module(name)
        for value in list(vars(module).values()):
            functions = []
            if inspect.isfunction(value) and value.__module__ == name:
                functions = [value]
            elif inspect.isclass(value) and value.__module__ == name:
                for attr in vars(value).values():
                    attr = getattr(attr, "__func__", attr)  # staticmethod, classmethod
                    if inspect.isfunction(attr):
                        functions.append(attr)
            for function in functions:
                dataflow = f"{name}.{function.__qualname__}" not in _ARRAY_COMPARISONS
                function.__code__ = instrument_bytecode.patch_code(
                    function.__code__, dataflow, nested=True
                )


def _fuzz_one(name: str) -> None:
    import atheris

    logging.set_verbosity(logging.ERROR)  # a reader's warnings per input would be the cost

    scratch = tempfile.mkdtemp(
        prefix=f"fuzz-{name}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    target = targets.TARGETS[name](scratch)
    corpus = _CORPUS.value or tempfile.mkdtemp(prefix=f"corpus-{name}-")
    os.makedirs(corpus, exist_ok=True)
    for index, seed in enumerate(target.seeds):
        with open(os.path.join(corpus, f"seed{index}"), "wb") as f:
            f.write(seed)
    _instrument(target.modules)
    artifacts = _ARTIFACTS.value or os.getcwd()
    os.makedirs(artifacts, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={_SECONDS.value}",
        f"-rss_limit_mb={_RSS.value}",
        f"-timeout={_TIMEOUT.value}",
        "-print_final_stats=1",
        f"-max_len={max(4096, 2 * max(map(len, target.seeds)))}",
        f"-artifact_prefix={os.path.join(artifacts, name)}-",
        corpus,
    ]
    atheris.Setup(argv, target.check)
    atheris.Fuzz()  # exits the process


_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


def _campaign(names, report_path):
    """Runs each target in a child and records what libFuzzer and the kernel report."""
    rows = []
    log_dir = os.path.join(os.path.dirname(report_path) or ".", "scratch", "fuzz")
    os.makedirs(log_dir, exist_ok=True)
    for name in names:
        log = os.path.join(log_dir, f"{name}.log")
        command = [
            sys.executable,
            "-m",
            "experiments.fuzz",
            f"--target={name}",
            f"--seconds={_SECONDS.value}",
            f"--rss_limit_mb={_RSS.value}",
            f"--timeout_s={_TIMEOUT.value}",
            f"--artifacts={log_dir}",
        ]
        start = time.perf_counter()
        with open(log, "w") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            _, wait_status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(wait_status)
        with open(log, errors="replace") as f:
            text = f.read()
        status = _STATUS.findall(text)
        stats = dict(_STAT.findall(text))
        crashes = sorted(
            f for f in os.listdir(log_dir) if f.startswith(f"{name}-") and not f.endswith(".log")
        )
        rows.append(
            {
                "target": name,
                "seconds": _SECONDS.value,
                "wall_s": round(wall, 1),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "executions": int(
                    stats.get("number_of_executed_units", status[-1][0] if status else 0)
                ),
                "exec_per_s": int(stats.get("average_exec_per_sec", 0)),
                "cov": int(status[-1][1]) if status else None,
                "ft": int(status[-1][2]) if status else None,
                "corpus": int(status[-1][3]) if status else None,
                "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
                "child_maxrss_mb": usage.ru_maxrss // 1024,
                "exit_code": code,
                "crash_inputs": crashes,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    with open(report_path, "w") as f:
        json.dump(
            {"rss_limit_mb": _RSS.value, "timeout_s": _TIMEOUT.value, "runs": rows}, f, indent=1
        )
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if (_TARGET.value is None) == (_CAMPAIGN.value is None):
        raise app.UsageError("Give either --target or --campaign.")
    if _TARGET.value is not None:
        _fuzz_one(_TARGET.value)
        return
    unknown = sorted(set(_CAMPAIGN.value) - set(targets.TARGETS))
    if unknown or not _REPORT.value:
        raise app.UsageError(f"--campaign needs --report and known targets (not {unknown}).")
    _campaign(_CAMPAIGN.value, _REPORT.value)


if __name__ == "__main__":
    cli.run(main)
