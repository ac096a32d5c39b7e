"""Fast CPU memory allocation by default: glibc's huge-page malloc for every entry point.

XLA:CPU allocates each execution's temporaries afresh; glibc serves such large blocks with
mmap, and the kernel faults in and zeroes every 4 KiB page again at every train step (the
profile in WORKSPACE_NOTES.md found this as zero-fill copies). `glibc.malloc.hugetlb=1`
(glibc >= 2.35) makes malloc ask for transparent huge pages instead. glibc reads its
tunables once, when the process starts, so the library cannot switch this on from inside:
the entry point re-executes itself once with the setting added to `GLIBC_TUNABLES`. It does
so only where the setting exists (Linux, glibc >= 2.35, transparent huge pages not 'never'),
never when the user already chose a `glibc.malloc.hugetlb` value, and never with
`PIXEL_RNN_HUGE_PAGES=0`; the process id stays the same (exec, not a child process).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
OPT_OUT = "PIXEL_RNN_HUGE_PAGES"  # set to 0 to keep glibc's default allocator behaviour
_MARKER = "PIXEL_RNN_HUGE_PAGES_SET_BY"  # set in the re-executed process: no second exec
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on, or None (not glibc, not Linux)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if name == "glibc" and match else None


def transparent_huge_pages(path: str = _THP_ENABLED) -> str | None:
    """The kernel's THP mode ('always', 'madvise' or 'never'), or None if unknown."""
    try:
        with open(path) as f:
            match = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return match[1] if match else None


def huge_pages_environment(
    environ: Mapping[str, str], glibc: tuple[int, int] | None, thp: str | None
) -> dict[str, str] | None:
    """The environment to re-execute with, or None if the process should run as it is.

    Args:
      environ: the current environment.
      glibc: `glibc_version()`.
      thp: `transparent_huge_pages()`.

    Returns:
      A copy of `environ` with `glibc.malloc.hugetlb=1` appended to `GLIBC_TUNABLES`, or
      None: opted out, already re-executed, the user set the tunable, or it does not exist
      here (not glibc >= 2.35, or THP off).
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT) == "0" or _MARKER in environ or TUNABLE in tunables:
        return None
    if glibc is None or glibc < (2, 35) or thp not in ("always", "madvise"):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{SETTING}" if tunables else SETTING
    env[_MARKER] = "experiments.allocator"
    return env


def describe(environ: Mapping[str, str] = os.environ) -> str:
    """One line for the start of a run's log: which allocator setting is in effect."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:
        who = "set by the entry point" if _MARKER in environ else "set by the user"
        return f"Allocator: GLIBC_TUNABLES={tunables} ({who})."
    if environ.get(OPT_OUT) == "0":
        return f"Allocator: glibc defaults ({OPT_OUT}=0)."
    return "Allocator: glibc defaults (huge-page malloc unavailable here)."


def ensure_huge_pages() -> None:
    """Re-executes this process once with glibc's huge-page malloc, where that exists.

    Call it first thing in an entry point, before anything allocates much. Returns normally
    (doing nothing) when no re-execution is needed or possible.
    """
    env = huge_pages_environment(os.environ, glibc_version(), transparent_huge_pages())
    if env is None:
        return
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # exec refused (unusual sandbox): run as we are, with glibc's defaults
