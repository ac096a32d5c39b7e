"""`experiments.allocator`: the entry points re-execute once with glibc's huge-page malloc."""

import os
import subprocess
import sys

import pytest

from experiments import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_setting_is_added_only_where_it_exists_and_nobody_chose_otherwise():
    env = allocator.huge_pages_environment({"PATH": "/bin"}, (2, 36), "madvise")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    # Other tunables are kept; the setting is appended.
    env = allocator.huge_pages_environment({"GLIBC_TUNABLES": "a.b=2"}, (2, 35), "always")
    assert env["GLIBC_TUNABLES"] == "a.b=2:glibc.malloc.hugetlb=1"
    # The user's own choice, the opt-out, a second pass, old glibc, no glibc, THP off: as is.
    for environ, glibc, thp in [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise"),
        ({"PIXEL_RNN_HUGE_PAGES": "0"}, (2, 36), "madvise"),
        (allocator.huge_pages_environment({}, (2, 36), "madvise"), (2, 36), "madvise"),
        ({}, (2, 34), "madvise"),
        ({}, None, "madvise"),
        ({}, (2, 36), "never"),
        ({}, (2, 36), None),
    ]:
        assert allocator.huge_pages_environment(environ, glibc, thp) is None


def test_describe_says_what_is_in_effect_and_who_set_it():
    assert "set by the user" in allocator.describe({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    env = allocator.huge_pages_environment({}, (2, 36), "madvise")
    assert "set by the entry point" in allocator.describe(env)
    assert "PIXEL_RNN_HUGE_PAGES=0" in allocator.describe({"PIXEL_RNN_HUGE_PAGES": "0"})


def test_transparent_huge_pages_reads_the_bracketed_mode(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert allocator.transparent_huge_pages(str(path)) == "madvise"
    assert allocator.transparent_huge_pages(str(tmp_path / "missing")) is None


_PROBE = (
    "import os, sys\n"
    "from experiments import cli\n"
    "print('start', os.getpid(), flush=True)\n"
    "def main(argv):\n"
    "    print('main', os.getpid(), os.environ.get('GLIBC_TUNABLES', ''), argv[1:], flush=True)\n"
    "cli.run(main)\n"
)


def _probe(**env):
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    environ.update(env, PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "extra"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [line.split(" ", 2) for line in out.stdout.splitlines()]


@pytest.mark.skipif(
    allocator.huge_pages_environment(
        {}, allocator.glibc_version(), allocator.transparent_huge_pages()
    )
    is None,
    reason="glibc >= 2.35 with transparent huge pages is needed for the setting to exist",
)
def test_an_entry_point_re_executes_itself_once_with_the_setting_and_keeps_its_pid():
    lines = _probe()
    starts = [line for line in lines if line[0] == "start"]
    mains = [line for line in lines if line[0] == "main"]
    assert len(starts) == 2 and starts[0][1] == starts[1][1]  # exec: the same process
    assert len(mains) == 1 and mains[0][1] == starts[0][1]
    assert "glibc.malloc.hugetlb=1" in mains[0][2] and "['extra']" in mains[0][2]
    # Opted out: one start, glibc's defaults.
    lines = _probe(PIXEL_RNN_HUGE_PAGES="0")
    assert [line[0] for line in lines] == ["start", "main"]
    assert "hugetlb" not in lines[1][2]
