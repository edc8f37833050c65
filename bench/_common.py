"""Shared helpers for the benchmarks: timed child processes with their own peak RSS,
alternating repeats, medians, the peer-tool venv, and Markdown tables.

Benchmarks are not tests: they print measured times and ratios against a peer
tool run on the same machine in the same run. Every measured command runs as a
child process, so tools are measured one at a time and never share a process;
its CPU time comes from `os.wait4` and its peak RSS from GNU time (see `run`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_VENV = REPO / ".venv"
WORK = Path(os.environ.get("BUILDENV_BENCH_WORK", REPO / "bench" / ".work"))


def _console_script() -> Path:
    """The venv's `buildenv`, or where the repository has no `.venv` (the benchmarks' smoke
    test in a Pants sandbox) a script running `python -m buildenv` with this interpreter."""
    installed = MAIN_VENV / "bin" / "buildenv"
    if installed.exists():
        return installed
    shim = WORK / "bin" / "buildenv"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m buildenv "$@"\n')
    shim.chmod(0o755)
    return shim


MAIN_PY = MAIN_VENV / "bin" / "python" if MAIN_VENV.exists() else Path(sys.executable)
BUILDENV = _console_script()
PEER_VENV = Path(os.environ.get("BUILDENV_BENCH_PEER_VENV",
                                Path.home() / ".cache" / "buildenv-bench-venv"))
PEER_PY = PEER_VENV / "bin" / "python"
PEER_PACKAGES = ("dvc", "pandera", "great_expectations", "pyinstrument", "pandas", "pyarrow")


@dataclass
class Run:
    seconds: float
    maxrss_kb: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    cpu: float = 0.0  # user + system seconds of the child (and children it waited for)


@dataclass
class Series:
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def cpu(self) -> float:
        """Median CPU seconds: steadier than wall time on a shared, loaded machine."""
        return statistics.median(r.cpu for r in self.runs)

    @property
    def best(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def rss_mb(self) -> float:
        return max(r.maxrss_kb for r in self.runs) / 1024

    def spread(self) -> str:
        xs = sorted(r.seconds for r in self.runs)
        return f"{xs[0]:.2f}-{xs[-1]:.2f}"


TIME = Path("/usr/bin/time")  # GNU time: reports the peak RSS of the command alone


def run(cmd: Sequence[str | os.PathLike], cwd: Path | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> Run:
    """Run one command; wall time, CPU time and peak RSS of that child.

    The peak RSS comes from GNU time (`%M`) wrapped around the command: the rusage of a
    child forked from this process would count this process's own pages, which the child
    maps until it execs (Linux keeps that high-water mark across exec). Without
    /usr/bin/time, os.wait4's ru_maxrss is used (an upper bound).
    PYTHONDONTWRITEBYTECODE is dropped: a user's buildenv has its .pyc files, and without
    them every run would also pay for compiling buildenv's own modules."""
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        if TIME.exists():
            argv = [str(TIME), "-q", "-f", "%M", "-o", rss.name, *argv]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        maxrss = usage.ru_maxrss
        if TIME.exists():
            try:
                maxrss = int(rss.read().strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        out.seek(0)
        err.seek(0)
        result = Run(seconds, maxrss, proc.returncode,
                     out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                     usage.ru_utime + usage.ru_stime)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def alternate(cases: dict[str, Callable[[], Run]], repeats: int,
              before: dict[str, Callable[[], None]] | None = None,
              warmup: bool = True) -> dict[str, Series]:
    """Run each case once per round, round after round (so drift in machine load hits every
    case alike), each round starting one case later (so no case always runs right after the
    same other one: what a process leaves behind, in the page cache or the allocator, is
    measured as the next case's cost); `before[name]` runs untimed before each timed run
    (e.g. drop a cache)."""
    before = before or {}
    series = {name: Series(name) for name in cases}
    if warmup:  # page cache, .pyc files, lazy imports: every case starts warm
        for name, case in cases.items():
            if name in before:
                before[name]()
            case()
    names = list(cases)
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            case = cases[name]
            if name in before:
                before[name]()
            series[name].runs.append(case())
        print(f"  round {i + 1}/{repeats}: " + ", ".join(
            f"{n} {s.runs[-1].seconds:.2f}s" for n, s in series.items()), flush=True)
    return series


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def ensure_peer_venv(required: Sequence[str] = PEER_PACKAGES) -> Path:
    """The separate venv holding peer tools (never the project's .venv)."""
    if not PEER_PY.exists():
        print(f"creating peer venv {PEER_VENV} (python3.11)", flush=True)
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv",
                        str(PEER_VENV)], check=True)
    missing = [p for p in required if subprocess.run(
        [str(PEER_PY), "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec("
         f"{p!r}) is None)"], capture_output=True).returncode]
    if missing:
        print(f"installing into peer venv: {' '.join(missing)}", flush=True)
        subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", *missing], check=True)
    return PEER_VENV


def peer_version(module: str) -> str:
    out = subprocess.run([str(PEER_PY), "-c", f"import importlib.metadata as m; "
                          f"print(m.version({module!r}))"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {cpu}, load {load:.1f} at start"


def work_dir(name: str) -> Path:
    path = WORK / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_repo(dest: Path) -> Path:
    """A copy of the tracked files of /work/main (the example multiverse), without state."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        # buildenv/ stays out: `python -m buildenv.training.runner` runs with cwd=root and must import
        # the installed package, not a stale copy of it
        if not src.is_file() or rel.startswith(("bench/", "buildenv/", "tests/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest
