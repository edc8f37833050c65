"""Benchmark `buildenv build`: overhead over a bare fit, and the no-op `build --all`.

    .venv/bin/python bench/bench_build.py [--fit-seconds 20] [--repeats 3] [--only overhead|noop]

(b) Overhead. A temp repo with a generated dataset (seeded), one environment and one
    training (`train.py`: HistGradientBoostingClassifier, threads=1). The same `train()` is
    timed two ways, alternating:
    - bare: `python fit_alone.py`, which imports train.py and calls train() with a minimal
      stand-in for ctx (reads the Parquet file with pyarrow, logs nothing), OMP threads = 1;
    - `buildenv build synth --env bench` (CLI): check, lock check, validate, train in the
      runner subprocess, importance, MLflow save, verify, artifact, registration.
    Before each build, dist/, the build/validate caches and registration markers are
    removed, so every timed build really builds, validates and registers; the MLflow
    database is kept (the first build of a repo creates it: timed separately).
    The fit size (max_iter) is calibrated so that the bare run takes about --fit-seconds.
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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
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

SEED = 20261001
ROWS = 300_000
FEATURES = 16

TRAIN_PY = '''"""Synthetic benchmark training: gradient-boosted trees on generated data."""

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

FEATURES = [f"x{i}" for i in range(%(features)d)] + ["segment"]
MAX_ITER = %(max_iter)d


def train(ctx):
    df = ctx.read("events", columns=FEATURES + ["label"])
    X = df[FEATURES]
    y = df["label"].to_numpy()
    cut = int(len(df) * 0.9)
    model = HistGradientBoostingClassifier(
        max_iter=MAX_ITER, learning_rate=0.05, max_leaf_nodes=63, early_stopping=False,
        categorical_features=["segment"], random_state=ctx.seed)
    model.fit(X.iloc[:cut], y[:cut])
    ctx.log_metric("val_auc", float(roc_auc_score(y[cut:], model.predict_proba(X.iloc[cut:])[:, 1])))
    ctx.set_holdout(X.iloc[cut:], y[cut:])
    return model
'''

FIT_ALONE_PY = '''"""The same train() outside buildenv: a minimal ctx, same imports, same data."""
import os, sys, time
started = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyarrow.parquet as pq
from train import train


class Ctx:
    seed = 0

    def read(self, dataset, columns=None):
        return pq.read_table("data/events.parquet", columns=columns).to_pandas()

    def log_metric(self, name, value):
        pass

    def log_param(self, name, value):
        pass

    def set_holdout(self, X, y):
        pass


fit_started, fit_cpu = time.perf_counter(), time.process_time()
train(Ctx())
print(f"FIT {time.perf_counter() - fit_started:.3f} TOTAL {time.perf_counter() - started:.3f} "
      f"FITCPU {time.process_time() - fit_cpu:.3f}")
'''

ENV_YAML = """name: bench
description: build-overhead benchmark
datasets:
  events:
    uri: data/events.parquet
    format: parquet
    columns:
%(columns)s
      segment: {dtype: string, nullable: false, domain: [a, b, c, d, e, f, g, h]}
      label: {dtype: bool, nullable: false}
label: {dataset: events, column: label, classes: [false, true]}
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
threads = 1
"""


def make_repo(root: Path, max_iter: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    data = root / "data" / "events.parquet"
    stamp = root / "data" / "events.seed"
    want = f"{SEED}:{ROWS}:{FEATURES}"
    if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
        rng = np.random.default_rng(SEED)
        X = rng.normal(size=(ROWS, FEATURES))
        segment = np.array(list("abcdefgh"), dtype=object)[rng.integers(0, 8, ROWS)]
        logit = X[:, 0] * X[:, 1] + np.sin(X[:, 2] * 2) + 0.5 * X[:, 3] - 0.3 * (segment == "c")
        label = rng.random(ROWS) < 1 / (1 + np.exp(-logit))
        cols = {f"x{i}": X[:, i] for i in range(FEATURES)}
        cols.update({"segment": segment, "label": label})
        pq.write_table(pa.table(cols), data)
        stamp.write_text(want)
    columns = "\n".join(f"      x{i}: {{dtype: float64, nullable: false}}" for i in range(FEATURES))
    (root / "environments" / "bench.yaml").write_text(ENV_YAML % {"columns": columns})
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "train.py").write_text(TRAIN_PY % {"features": FEATURES, "max_iter": max_iter})
    (root / "fit_alone.py").write_text(FIT_ALONE_PY)


def bare_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


def fresh_build_state(root: Path) -> None:
    shutil.rmtree(root / "dist", ignore_errors=True)
    for sub in ("cache", "registered", "holdouts"):
        shutil.rmtree(root / ".buildenv" / sub, ignore_errors=True)


def calibrate(root: Path, target: float) -> int:
    """max_iter for a fit of about `target` seconds; on CPU time (the fit is single-threaded),
    so a busy machine does not shrink the fit."""
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
import buildenv.data.validate as V
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
mv = Multiverse(project)
t = time.perf_counter()
outcome = B.build_pair(project, mv, "synth", "bench", B.BuildOptions())
total = time.perf_counter() - t
assert outcome.status == "built", [d.to_text() for d in outcome.diagnostics]
print(json.dumps({"total": total, "spent": spent, "runner": outcome.timings}))
"""


def bench_overhead(work: Path, target: float, repeats: int, max_iter: int | None
                   ) -> tuple[str, dict[str, bool]]:
    root = work / "overhead"
    root.mkdir(parents=True, exist_ok=True)
    if max_iter is None:
        max_iter = calibrate(root, target)
    make_repo(root, max_iter)
    shutil.rmtree(root / ".buildenv", ignore_errors=True)
    shutil.rmtree(root / "dist", ignore_errors=True)
    run([BUILDENV, "lock"], cwd=root)
    first = run([BUILDENV, "build", "synth", "--env", "bench"], cwd=root)  # creates mlflow.db
    print(f"first build of the repo (creates the MLflow database): {first.seconds:.1f} s",
          flush=True)

    def bare() -> Run:
        return run([MAIN_PY, "fit_alone.py"], cwd=root, env=bare_env())

    def build() -> Run:
        r = run([BUILDENV, "build", "synth", "--env", "bench"], cwd=root)
        assert "built" in r.stdout, r.stdout
        return r

    series = alternate({"bare fit (same train(), outside buildenv)": bare,
                        "buildenv build synth --env bench": build},
                       repeats, before={"buildenv build synth --env bench":
                                        lambda: fresh_build_state(root)}, warmup=False)
    bare_s = series["bare fit (same train(), outside buildenv)"]
    build_s = series["buildenv build synth --env bench"]
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
    text = "\n".join([
        f"{ROWS} rows x {FEATURES + 1} features, HistGradientBoosting max_iter={max_iter}, "
        f"threads=1; median of {repeats} alternating runs (bare fit() alone: "
        f"{statistics.median(fits):.1f} s).", "",
        table(["command", "wall s", "range s", "x T (wall)", "CPU s", "x bare (CPU)",
               "peak RSS MiB"], rows), "",
        f"- T = {T:.1f} s; build = **{build_s.median:.1f} s = {build_s.median / T:.2f}x T**, "
        f"overhead {build_s.median - T:+.1f} s; budget 1.15 x T + 2 s = {budget:.1f} s: "
        f"{verdict(ok)}",
        f"- on CPU time (steadier on a busy machine): bare {bare_s.cpu:.1f} s, build "
        f"{build_s.cpu:.1f} s = {build_s.cpu / bare_s.cpu:.2f}x, overhead "
        f"{build_s.cpu - bare_s.cpu:+.1f} s (budget 1.15 x + 2 s = {1.15 * bare_s.cpu + 2:.1f} s: "
        f"{verdict(build_s.cpu <= 1.15 * bare_s.cpu + 2)})",
        f"- first build of a fresh repo (MLflow database created): {first.seconds:.1f} s",
        f"- where an in-process build_pair spends its {bd['total']:.1f} s: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in parts)
        + (f"; inside the runner: {runner}" if runner else ""),
    ])
    return text, {"build <= 1.15 T + 2 s": ok}


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
    ap.add_argument("--only", choices=["overhead", "noop"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["overhead", "noop"])
    work = work_dir("build")
    print(f"# bench_build ({machine()})\n", flush=True)
    sections, goals = [], {}
    if "overhead" in only:
        text, g = bench_overhead(work, args.fit_seconds, args.repeats, args.max_iter)
        sections += ["## (b) Build overhead over a bare fit", text]
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
