"""The benchmarks still run: each one's cheapest mode, on tiny data, as a subprocess.

Benchmarks call buildenv's internals directly, so a changed signature breaks them without any
test noticing (session 11: `bench_derived.py --only functions`). This runs each one the way a
user does (`python bench/<script> ...`), in a scratch work directory, and checks that it exits
0 and prints its ratio lines; the numbers themselves mean nothing at these sizes. Every
benchmark is listed here: run by default (a few seconds each), run only with
`BUILDENV_BENCH_SMOKE=all` (slower: a model fit, several tools), or not run, with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BENCH = REPO_ROOT / "bench"

# script -> (arguments of its cheapest mode, patterns its output must hold)
SMOKE: dict[str, tuple[list[str], list[str]]] = {
    "bench_derived.py": (["--only", "functions", "--rows", "20000"],
                         [r"10 functions on 20,000 rows: buildenv vote path [\d.]+ s vs bare "
                          r"loop [\d.]+ s \([\d.]+x\)"]),
    "bench_gate.py": (["--rows", "2000", "--repeats", "1"],
                      [r"- parquet: verified / unverified decode, hashed while decoded: wall "
                       r"\*\*[\d.]+x\*\*", r"- csv: verified / unverified decode"]),
    "bench_init.py": (["--rows", "2000", "--repeats", "1"],
                      [r"time vs the in-memory baseline: [\d.]+x"]),
    "bench_labels.py": (["--annotations", "2000", "--repeats", "1"],
                        [r"cold lock / baseline: [\d.]+x wall, [\d.]+x cpu"]),
    "bench_skew.py": (["--smoke"], [r"skew / drift on the same data: [\d.]+x"]),
    "bench_tables.py": (["--only", "lock", "--files", "2", "--rows", "500", "--repeats", "1"],
                        [r"lock / sha256 of the files: \*\*[\d.]+x\*\* wall"]),
}

# Slower (10-25 s of CPU each at these sizes): only with BUILDENV_BENCH_SMOKE=all.
SLOW: dict[str, tuple[list[str], list[str]]] = {
    "bench_drift.py": (["--rows", "2000", "--repeats", "1", "--no-peers"],
                       [r"\| buildenv drift \(CLI\) +\| [\d.]+ +\| 1\.00x"]),
    "bench_evaluation.py": (["--rows", "2000", "--slices", "4", "--resamples", "100",
                             "--naive-resamples", "2", "--repeats", "1"],
                            [r"\| slices \+ intervals \| [\d.]+ \| [\d.]+ x fit"]),
    "bench_progress.py": (["--only", "micro", "--repeats", "1"],
                          [r"hooks and ticks together: [\d.]+% of the work"]),
}

NOT_RUN = {
    "bench_beside.py": "fits its models for every case: minutes even at its smallest",
    "bench_build.py": "builds and fits trainings, calibrated to a fit time",
    "bench_families.py": "fits XGBoost, LightGBM and PyTorch models",
    "bench_hardening.py": "builds a training first",
    "bench_lock.py": "hashes GiB-sized files by design; no small mode yet",
    "bench_pants.py": "drives ./pants itself",
    "bench_ray_stop.py": "starts a local Ray and builds trainings on it, per checkout",
    "bench_privacy.py": "its bare OpenDP baseline takes over a minute at any size",
    "bench_sandbox.py": "a sandbox start-up per case and format: about 35 s",
    "bench_scale.py": "hundreds of partition files by design; no small mode yet",
    "bench_toolchains.py": "creates and installs Python environments",
    "bench_validate.py": "its environment's null-fraction limits fail on tiny data; peers",
}


def test_every_benchmark_is_smoked_or_says_why_not():
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    listed = [*SMOKE, *SLOW, *NOT_RUN]
    assert len(listed) == len(set(listed))
    assert scripts == set(listed), "list a new benchmark in SMOKE, SLOW or NOT_RUN"


@pytest.mark.parametrize("script", [*sorted(SMOKE), *sorted(SLOW)])
def test_a_benchmark_runs_and_prints_its_ratios(script: str, tmp_path: Path):
    if script in SLOW and os.environ.get("BUILDENV_BENCH_SMOKE") != "all":
        pytest.skip("slow: set BUILDENV_BENCH_SMOKE=all")
    args, patterns = {**SMOKE, **SLOW}[script]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUILDENV_BENCH_WORK": str(tmp_path / "w"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for pattern in patterns:
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout[-3000:])
