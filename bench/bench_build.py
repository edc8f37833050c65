"""Benchmark `buildenv build`: overhead over a bare fit, and the no-op `build --all`.

    .venv/bin/python bench/bench_build.py [--fit-seconds 20] [--repeats 3] [--cap 600]
                                          [--only overhead|noop|waitpolicy] [--threads default,1]

(a) Wait policy. The bare fit below (every core) with OpenMP's default wait policy and with
    OMP_WAIT_POLICY=PASSIVE, on the machine as it is and with one busy-looping process per core
    added by the bench, alternating: the ratios behind the training process's default.

(b) Overhead. A temp repo with a generated dataset (seeded), one environment (scored on a
    separate, pinned evaluation dataset, so that `ctx.read` returns every row of the training
    dataset, as the bare read does) and one training (`train.py`: HistGradientBoosting).
    The same `train()` is timed two ways, alternating:
    - bare: `python fit_alone.py` imports train.py, calls train() with a minimal ctx (reads
      the Parquet file with pyarrow into pandas) and pickles the model: read + fit + save,
      with the build's native thread count;
    - `buildenv build synth --env bench` (CLI): check, lock check, validate, train in the
      runner subprocess, evaluation, importance, MLflow save, verify, artifact, registration.
    Before each build, dist/, the build/validate caches and registration markers are
    removed, so every timed build really builds, validates and registers; the MLflow
    database is kept (the first build of a repo creates it: timed separately).
    Each `--threads` configuration is measured: `default` (no `threads` in the training's
    table: every core) and numbers (`1`: artifacts identical across machines).
    The fit size (max_iter) is calibrated once, on one thread's CPU time, for --fit-seconds.
    Goal: build <= 1.15 x T + 2 s.
(c) No-op `buildenv build --all` over the example multiverse (a copy of the repo, built once,
    then built again): median of the repeats after that. Goal: under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BUILDENV,
    MAIN_PY,
    Run,
    alternate,
    copy_repo,
    machine,
    run,
    table,
    verdict,
    work_dir,
)

from buildenv.compile.launch import wait_policy

SEED = 20261001
ROWS = 300_000
FEATURES = 16

TRAIN_PY = '''"""Synthetic benchmark training: gradient-boosted trees on generated data."""

from sklearn.ensemble import HistGradientBoostingClassifier

FEATURES = [f"x{i}" for i in range(%(features)d)] + ["segment"]
MAX_ITER = %(max_iter)d


def train(ctx):
    df = ctx.read("events", columns=FEATURES + ["label"])
    model = HistGradientBoostingClassifier(
        max_iter=MAX_ITER, learning_rate=0.05, max_leaf_nodes=63, early_stopping=False,
        categorical_features=["segment"], random_state=ctx.seed)
    return model.fit(df[FEATURES], df["label"].to_numpy())
'''

FIT_ALONE_PY = '''"""The same train() outside buildenv: a minimal ctx, same imports, same data, pickled."""
import os, pickle, sys, time
started = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyarrow.parquet as pq
from train import train


class Ctx:
    seed = 0

    def read(self, dataset, columns=None):
        return pq.read_table("data/events.parquet", columns=columns).to_pandas()


fit_started, fit_cpu = time.perf_counter(), time.process_time()
model = train(Ctx())
fit, cpu = time.perf_counter() - fit_started, time.process_time() - fit_cpu
with open("model.pkl", "wb") as handle:
    pickle.dump(model, handle)
print(f"FIT {fit:.3f} TOTAL {time.perf_counter() - started:.3f} FITCPU {cpu:.3f}")
'''

ENV_YAML = """name: bench
description: build-overhead benchmark
datasets:
  events:
    uri: data/events.parquet
    format: parquet
    columns:
%(columns)s
  events_eval:
    uri: data/events_eval.parquet
    columns:
%(columns)s
label: {dataset: events, column: label, classes: [false, true]}
evaluation: {dataset: events_eval}
serving:
  stack: sklearn
  ops: [sklearn.ensemble.HistGradientBoostingClassifier]
  requirements: ["scikit-learn>=1.6,<2"]
"""

PYPROJECT = """[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.synth]
entry = "train.py:train"
environments = ["bench"]
%(threads)s"""

EVAL_ROWS = 30_000


def _table(rows: int, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES))
    segment = np.array(list("abcdefgh"), dtype=object)[rng.integers(0, 8, rows)]
    logit = X[:, 0] * X[:, 1] + np.sin(X[:, 2] * 2) + 0.5 * X[:, 3] - 0.3 * (segment == "c")
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    cols = {f"x{i}": X[:, i] for i in range(FEATURES)}
    cols.update({"segment": segment, "label": label})
    return pa.table(cols)


def make_repo(root: Path, max_iter: int, threads: str = "1") -> None:
    import pyarrow.parquet as pq

    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    data = root / "data" / "events.parquet"
    stamp = root / "data" / "events.seed"
    want = f"{SEED}:{ROWS}:{FEATURES}:{EVAL_ROWS}"
    if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
        pq.write_table(_table(ROWS, SEED), data)
        pq.write_table(_table(EVAL_ROWS, SEED + 1), root / "data" / "events_eval.parquet")
        stamp.write_text(want)
    columns = "\n".join([f"      x{i}: {{dtype: float64, nullable: false}}"
                         for i in range(FEATURES)] + [
        "      segment: {dtype: string, nullable: false, domain: [a, b, c, d, e, f, g, h]}",
        "      label: {dtype: bool, nullable: false}"])
    (root / "environments" / "bench.yaml").write_text(ENV_YAML % {"columns": columns})
    (root / "pyproject.toml").write_text(PYPROJECT % {
        "threads": "" if threads == "default" else f"threads = {int(threads)}\n"})
    (root / "train.py").write_text(TRAIN_PY % {"features": FEATURES, "max_iter": max_iter})
    (root / "fit_alone.py").write_text(FIT_ALONE_PY)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bare_env(threads: str = "1") -> dict[str, str]:
    env = dict(os.environ)
    count = str(cores() if threads == "default" else int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = count
    env["PYTHONHASHSEED"] = "0"
    env.pop("OMP_WAIT_POLICY", None)  # as a user's script runs: OpenMP's own default
    return env


class Load:
    """`count` busy-looping processes: the other jobs of a loaded machine, made on purpose so
    that quiet and loaded are measured in the same run."""

    def __init__(self, count: int):
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Load:
        self.procs = [subprocess.Popen([MAIN_PY, "-c", "while True: pass"])
                      for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def bench_wait_policy(work: Path, repeats: int, max_iter: int, cap: float
                      ) -> tuple[str, dict[str, bool]]:
    """The bare fit with every core, OpenMP's default wait policy against PASSIVE, on the
    machine as it is ("quiet": nothing added) and with one busy process per core added. A run
    longer than `cap` seconds is stopped and counts as `cap` (spinning waits on a loaded
    machine can take many times the passive fit): its ratio is then a lower bound."""
    root = work / "waitpolicy"
    root.mkdir(parents=True, exist_ok=True)
    make_repo(root, max_iter, "default")
    n = cores()

    def fit(policy: str | None, load: int) -> Callable[[], Run]:
        def case() -> Run:
            env = bare_env("default")
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            with Load(load):
                result = run(["timeout", f"{cap:g}", MAIN_PY, "fit_alone.py"], cwd=root,
                             env=env, check=False)
            if result.returncode not in (0, 124):  # 124: stopped at the cap
                raise RuntimeError(f"fit_alone.py exited {result.returncode}: {result.stderr}")
            capped.update({label_of[case]} if result.returncode == 124 else set())
            return result
        return case

    capped: set[str] = set()
    label_of: dict[Callable[[], Run], str] = {}

    cases = {f"{label} {policy or 'default (unset)'}": fit(policy, load)
             for label, load in (("as is", 0), (f"+{n} busy", n))
             for policy in (None, "PASSIVE")}
    label_of.update({case: name for name, case in cases.items()})
    load_before = os.getloadavg()[0]
    series = alternate(cases, repeats, warmup=False)
    names = list(cases)
    ratio_quiet = series[names[1]].median / series[names[0]].median
    ratio_loaded = series[names[3]].median / series[names[2]].median
    rows = [[s.name + (f" (runs stopped at {cap:g} s)" if s.name in capped else ""),
             f"{s.median:.2f}", s.spread(), f"{s.cpu:.1f}"] for s in series.values()]
    chosen = wait_policy(n, load=load_before, cores=n)
    faster = "PASSIVE" if ratio_quiet < 1 else None
    text = "\n".join([
        f"Bare read + fit + pickle, {n} threads, max_iter={max_iter}; median of {repeats} "
        f"alternating runs; one-minute load average before: {load_before:.1f}.", "",
        table(["configuration", "wall s", "range s", "CPU s"], rows), "",
        f"- PASSIVE / default: machine as is **{ratio_quiet:.2f}x**, with {n} busy processes "
        f"added **{ratio_loaded:.2f}x**",
        f"- buildenv's choice at this load (buildenv.compile.launch.wait_policy): "
        f"{chosen or 'OpenMP default'}; faster here: {faster or 'OpenMP default'}"])
    return text, {"the wait policy buildenv chooses at this load is the faster one":
                  chosen == faster or abs(ratio_quiet - 1) < 0.05}


def fresh_build_state(root: Path) -> None:
    shutil.rmtree(root / "dist", ignore_errors=True)
    for sub in ("cache", "registered", "holdouts"):
        shutil.rmtree(root / ".buildenv" / sub, ignore_errors=True)


def calibrate(root: Path, target: float) -> int:
    """max_iter for a fit of about `target` seconds of one thread's CPU time, so a busy
    machine does not shrink the fit."""
    probe = 30
    make_repo(root, probe)
    times = [float(run([MAIN_PY, "fit_alone.py"], cwd=root, env=bare_env()).stdout.split()[5])
             for _ in range(2)]
    per_iter = min(times) / probe
    max_iter = max(20, round(target / per_iter))
    print(f"calibration: {probe} iterations fit in {min(times):.2f} s of CPU -> max_iter "
          f"{max_iter} for ~{target:.0f} s", flush=True)
    return max_iter


BREAKDOWN = r"""
import json, sys, time
from pathlib import Path
import buildenv.compile.build as B
import buildenv.data.validate.validate as V
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
spent = {}
def wrap(mod, name, label):
    if not hasattr(mod, name):  # imported inside a function: wrap it at its source
        mod = V if hasattr(V, name) else None
        if mod is None:
            return
    fn = getattr(mod, name)
    def inner(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
    setattr(mod, name, inner)
for name, label in [("check_training", "static checks"), ("check_lock", "lock check"),
                    ("validate_env", "validate"), ("run_training", "runner subprocess"),
                    ("verify_model", "verify"), ("_maybe_register", "MLflow registration"),
                    ("code_files", "code digests"), ("_save_to_cache", "cache copy"),
                    ("write_lineage", "lineage")]:
    wrap(B, name, label)
project = Project.discover(sys.argv[1])
multiverse = Multiverse(project)
t = time.perf_counter()
outcome = B.build_pair(project, multiverse, "synth", "bench", B.BuildOptions())
total = time.perf_counter() - t
assert outcome.status == "built", [d.to_text() for d in outcome.diagnostics]
print(json.dumps({"total": total, "spent": spent, "runner": outcome.timings}))
"""


def bench_overhead(work: Path, target: float, repeats: int, max_iter: int,
                   threads: str) -> tuple[str, dict[str, bool]]:
    root = work / f"overhead-{threads}"
    root.mkdir(parents=True, exist_ok=True)
    make_repo(root, max_iter, threads)
    shutil.rmtree(root / ".buildenv", ignore_errors=True)
    shutil.rmtree(root / "dist", ignore_errors=True)
    run([BUILDENV, "lock"], cwd=root)
    first = run([BUILDENV, "build", "synth", "--env", "bench"], cwd=root)  # creates mlflow.db
    print(f"first build of the repo (creates the MLflow database): {first.seconds:.1f} s",
          flush=True)
    bare_name = "bare read + fit + pickle (same train())"
    build_name = "buildenv build synth --env bench"

    def bare() -> Run:
        return run([MAIN_PY, "fit_alone.py"], cwd=root, env=bare_env(threads))

    def build() -> Run:
        r = run([BUILDENV, "build", "synth", "--env", "bench"], cwd=root)
        assert "built" in r.stdout, r.stdout
        return r

    series = alternate({bare_name: bare, build_name: build}, repeats,
                       before={build_name: lambda: fresh_build_state(root)}, warmup=False)
    bare_s, build_s = series[bare_name], series[build_name]
    T = bare_s.median
    fits = [float(r.stdout.split()[1]) for r in bare_s.runs]
    budget = 1.15 * T + 2
    ok = build_s.median <= budget
    rows = [[s.name, f"{s.median:.1f}", s.spread(), f"{s.median / T:.2f}x", f"{s.cpu:.1f}",
             f"{s.cpu / bare_s.cpu:.2f}x", f"{s.rss_mb:.0f}"] for s in series.values()]
    fresh_build_state(root)
    bd = json.loads(run([MAIN_PY, "-c", BREAKDOWN, root]).stdout.strip().splitlines()[-1])
    parts = sorted(bd["spent"].items(), key=lambda kv: -kv[1])
    runner = ", ".join(f"{k} {v:.2f} s" for k, v in bd["runner"].items())
    lineage = json.loads((root / "dist" / "synth" / "bench" / "buildenv.json").read_text())
    label = (f"threads = {threads}" if threads != "default" else
             f"threads not set (default: every core, {lineage.get('threads')} here)")
    text = "\n".join([
        f"{label}: {ROWS} rows x {FEATURES + 1} features, HistGradientBoosting "
        f"max_iter={max_iter}; median of {repeats} alternating runs (bare fit() alone: "
        f"{statistics.median(fits):.1f} s).", "",
        table(["command", "wall s", "range s", "x T (wall)", "CPU s", "x bare (CPU)",
               "peak RSS MiB"], rows), "",
        f"- T = {T:.1f} s; build = **{build_s.median:.1f} s = {build_s.median / T:.2f}x T**, "
        f"overhead {build_s.median - T:+.1f} s; budget 1.15 x T + 2 s = {budget:.1f} s: "
        f"{verdict(ok)}",
        f"- on CPU time: bare {bare_s.cpu:.1f} s, build {build_s.cpu:.1f} s = "
        f"{build_s.cpu / bare_s.cpu:.2f}x, overhead {build_s.cpu - bare_s.cpu:+.1f} s",
        f"- first build of a fresh repo (MLflow database created): {first.seconds:.1f} s",
        f"- where an in-process build_pair spends its {bd['total']:.1f} s: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in parts)
        + (f"; inside the runner: {runner}" if runner else ""),
    ])
    return text, {f"build <= 1.15 T + 2 s (threads {threads})": ok}


def bench_noop(work: Path, repeats: int) -> tuple[str, bool]:
    copy = work / "multiverse"
    marker = copy / ".bench-built"
    if not marker.is_file():
        copy_repo(copy)
        run([BUILDENV, "lock"], cwd=copy)
        first = run([BUILDENV, "build", "--all"], cwd=copy, check=False)
        print(f"first build --all: {first.seconds:.1f} s (exit {first.returncode})", flush=True)
        marker.write_text("built\n")
    second = run([BUILDENV, "build", "--all"], cwd=copy, check=False)
    print(f"second build --all: {second.seconds:.2f} s", flush=True)
    summary = second.stdout.strip().splitlines()[-1] if second.stdout.strip() else "?"
    series = alternate({"buildenv build --all (no-op)": lambda: run(
        [BUILDENV, "build", "--all"], cwd=copy, check=False),
                        "buildenv --help": lambda: run([BUILDENV, "--help"], cwd=copy),
                        "python -c pass": lambda: run([MAIN_PY, "-c", "pass"])},
                       repeats, warmup=False)
    noop = series["buildenv build --all (no-op)"]
    rows = [[s.name, f"{s.median:.3f}", s.spread(), f"{s.cpu:.2f}", f"{s.rss_mb:.0f}"]
            for s in series.values()]
    ok = noop.median < 1.0
    text = "\n".join([
        f"Example multiverse ({summary.strip()}); built once, then timed; median of {repeats}.",
        "", table(["command", "wall s", "range s", "CPU s", "peak RSS MiB"], rows), "",
        f"- no-op build --all: **{noop.median:.2f} s** wall, {noop.cpu:.2f} s CPU (goal < 1 s: "
        f"{verdict(ok)})"])
    return text, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit-seconds", type=float, default=20.0)
    ap.add_argument("--max-iter", type=int, help="skip calibration")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cap", type=float, default=600.0,
                    help="waitpolicy: stop a fit after this many seconds (counts as the cap)")
    ap.add_argument("--only", choices=["overhead", "noop", "waitpolicy"], action="append")
    ap.add_argument("--threads", default="default,1",
                    help="comma-separated configurations: default (every core) and/or numbers")
    args = ap.parse_args()
    only = set(args.only or ["overhead", "noop", "waitpolicy"])
    work = work_dir("build")
    print(f"# bench_build ({machine()})\n", flush=True)
    sections, goals = [], {}
    max_iter = 0
    if only & {"overhead", "waitpolicy"}:
        max_iter = args.max_iter or calibrate(work / "calibrate", args.fit_seconds)
    if "waitpolicy" in only:
        text, g = bench_wait_policy(work, args.repeats, max_iter, args.cap)
        sections += ["## (a) OpenMP wait policy of the training process, quiet and loaded", text]
        goals.update(g)
    if "overhead" in only:
        for threads in args.threads.split(","):
            text, g = bench_overhead(work, args.fit_seconds, args.repeats, max_iter, threads)
            sections += [f"## (b) Build overhead over a bare fit, threads {threads}", text]
            goals.update(g)
    if "noop" in only:
        text, ok = bench_noop(work, max(args.repeats, 7))
        sections += ["## (c) No-op `buildenv build --all`", text]
        goals["no-op build --all < 1 s"] = ok
    print("\n\n".join(sections))
    print("\n## Goals\n" + "\n".join(f"- {k}: {verdict(v)}" for k, v in goals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
