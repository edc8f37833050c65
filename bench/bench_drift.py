"""Benchmark `buildenv drift` statistics against a pyarrow reference, Evidently and whylogs.

    .venv/bin/python bench/bench_drift.py [--rows 5000000] [--repeats 3] [--peer-repeats 1]

Data: two seeded Parquet versions of one dataset, 5M rows x 12 columns each (ints, floats
with nulls, a timestamp, a date, strings, a bool); the second is shifted (amounts x1.1,
scores +2, another country mix, more mobile traffic, later timestamps, ...). An environment
declares the columns and is locked against the first version.

Each tool runs in its own child process (peak RSS from os.wait4), round after round, page
cache warm, and prints the seconds of its work after its imports:
- buildenv: `buildenv drift bench --dataset events --against data/b.parquet` (CLI, baseline
  statistics cache cleared before each run, and once more with the baseline cached), and
  `run_drift(..., use_cache=False)` timed inside the process (streaming: baseline pass,
  then baseline bins and the candidate pass concurrently);
- reference: hand-written in-memory pyarrow/numpy with the same statistics (`read_table`
  of both versions, exact `pc.quantile` deciles and quantiles, `searchsorted` + `bincount`
  bins, `value_counts`, the same L-inf/JSD/PSI formulas);
- Evidently: `pd.read_parquet` of both + `Report([DataDriftPreset()]).run(...)` (peer venv);
- whylogs: `pd.read_parquet` of both + `why.log` profiles + `calculate_drift_scores` (peer
  venv).
Goals: buildenv work >= 0.8x the reference's speed, >= 5x each peer, peak memory bounded by the
batch size (about the same RSS on a 4x smaller file; RSS follows --batch-rows). The L-inf/JSD/
PSI values of buildenv and the reference are compared too (they differ only by bin edges from a
sample vs exact quantiles).

Peers live in their own venv (default ~/.cache/buildenv-bench-venv-drift, override with
BUILDENV_BENCH_DRIFT_VENV), never in the project's .venv: whylogs 1.6 needs numpy<2 and
Evidently 0.7 pandas<3, so the pins below differ from the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BUILDENV,
    MAIN_PY,
    Run,
    alternate,
    machine,
    run,
    table,
    verdict,
    work_dir,
)

SEED = 20260923
ROW_GROUP = 1 << 20
PEER_VENV = Path(os.environ.get("BUILDENV_BENCH_DRIFT_VENV",
                                Path.home() / ".cache" / "buildenv-bench-venv-drift"))
PEER_PY = PEER_VENV / "bin" / "python"
PEER_PINS = ["evidently==0.7.23", "whylogs==1.6.4", "ipython==9.18.1", "pandas==2.3.3",
             "numpy==1.26.4", "pyarrow==25.0.1"]
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "CA", "ES", "MX", "JP", "IT", "NL", "AU", "SE"]
COLUMNS = {"event_id": "int64", "user_id": "int64", "age": "int16", "views": "int32",
           "amount": "float64", "score": "float64", "event_ts": "timestamp",
           "signup_date": "date", "country": "string", "device": "string", "plan": "string",
           "is_active": "bool"}


def make_data(path: Path, rows: int, seed: int, shifted: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + shifted)
    zipf = 1 / np.arange(1, len(COUNTRIES) + 1) ** 1.1
    countries = np.roll(zipf, 2 if shifted else 0) / zipf.sum()
    devices = [0.3, 0.5, 0.15, 0.05] if shifted else [0.3, 0.4, 0.2, 0.1]
    start = 1_735_689_600_000_000 + (90 * 86_400_000_000 if shifted else 0)  # 2025-01-01

    def strings(values: list[str], p, n: int) -> pa.Array:
        idx = pa.array(rng.choice(len(values), n, p=p).astype(np.int32))
        return pa.DictionaryArray.from_arrays(idx, pa.array(values)).cast(pa.string())

    tmp = path.with_suffix(".tmp")
    schema = None
    writer = None
    done = 0
    while done < rows:
        n = min(ROW_GROUP, rows - done)
        table_ = pa.table({
            "event_id": pa.array(np.arange(done, done + n, dtype=np.int64)),
            "user_id": pa.array(rng.integers(1, 10_000_001, n, dtype=np.int64)),
            "age": pa.array(rng.integers(16, 90, n).astype(np.int16) + np.int16(shifted)),
            "views": pa.array(rng.poisson(40 if shifted else 35, n).astype(np.int32)),
            "amount": pa.array(rng.lognormal(3.0 + 0.1 * shifted, 1.0, n),
                               mask=rng.random(n) < 0.02),
            "score": pa.array(rng.normal(50 + 2 * shifted, 10, n)),
            "event_ts": pa.array(start + rng.integers(0, 365 * 86_400_000_000, n),
                                 pa.timestamp("us", tz="UTC")),
            "signup_date": pa.array(rng.integers(17_532, 20_454, n).astype(np.int32),
                                    pa.int32()).cast(pa.date32()),
            "country": strings(COUNTRIES, countries, n),
            "device": strings(["tv", "mobile", "web", "tablet"], devices, n),
            "plan": strings(["basic", "standard", "premium"], [0.5, 0.35, 0.15], n),
            "is_active": pa.array(rng.random(n) < (0.65 if shifted else 0.7)),
        })
        if writer is None:
            schema = table_.schema
            writer = pq.ParquetWriter(tmp, schema, compression="snappy")
        writer.write_table(table_.cast(schema))
        done += n
    assert writer is not None
    writer.close()
    os.replace(tmp, path)
    old = time.time() - 3600  # the stat cache trusts files not modified while being hashed
    os.utime(path, (old, old))


def env_yaml(name: str, uri: str) -> str:
    lines = [f"name: {name}", "description: drift benchmark", "datasets:", "  events:",
             f"    uri: {uri}", "    columns:"]
    lines += [f"      {col}: {{dtype: {dtype}}}" for col, dtype in COLUMNS.items()]
    return "\n".join(lines) + "\n"


BUILDENV_INPROC = r"""
import json, sys, time
t0 = time.perf_counter()
from buildenv.monitor.drift import run_drift, write_stats
from buildenv.core.project import Project
t1 = time.perf_counter()
project = Project.discover(sys.argv[1])
result = run_drift(project, sys.argv[2], "events", against=sys.argv[3], use_cache=False,
                   batch_rows=int(sys.argv[4]))
write_stats(result, project)
t2 = time.perf_counter()
metrics = {n: {k: c["metrics"][k] for k in ("linf", "jsd", "psi")}
           for n, c in result.stats["columns"].items()}
print("METRICS " + json.dumps(metrics))
print(f"WORK {t2 - t1:.4f} IMPORT {t1 - t0:.4f} ALERTS {len(result.alerts)}")
"""

REFERENCE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
t1 = time.perf_counter()
spec = json.loads(sys.argv[3])
strings = [n for n, d in spec.items() if d == "string"]
a = pq.read_table(sys.argv[1], columns=list(spec), read_dictionary=strings)
b = pq.read_table(sys.argv[2], columns=list(spec), read_dictionary=strings)
QS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]

def as_float(col, dtype):
    if dtype == "date":
        col = pc.cast(col, pa.int32())
    elif dtype == "timestamp":
        col = pc.cast(col, pa.int64())
    return pc.cast(col, pa.float64(), safe=False)

def summary(col):
    mm = pc.min_max(col)
    return {"count": pc.count(col).as_py(), "nulls": col.null_count, "mean": pc.mean(col).as_py(),
            "std": pc.stddev(col).as_py(), "min": mm["min"].as_py(), "max": mm["max"].as_py(),
            "quantiles": pc.quantile(col, q=QS).to_pylist()}

def compare(p, q):
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    kl = lambda x: float(np.sum(x[x > 0] * np.log2(x[x > 0] / m[x > 0])))
    pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    return {"linf": float(np.abs(q - p).max()), "jsd": min((kl(p) + kl(q)) / 2, 1.0),
            "psi": float(np.sum((qe - pe) * np.log(qe / pe)))}

metrics, summaries = {}, {}
for name, dtype in spec.items():
    x, y = a.column(name), b.column(name)
    if dtype in ("string", "bool"):
        counts = []
        for col in (x, y):
            vc = pc.value_counts(col.combine_chunks() if dtype == "string" else col)
            counts.append(dict(zip(vc.field(0).to_pylist(), vc.field(1).to_pylist())))
        keys = sorted(set(counts[0]) | set(counts[1]), key=str)
        p = np.array([counts[0].get(k, 0) for k in keys], float)
        q = np.array([counts[1].get(k, 0) for k in keys], float)
        summaries[name] = counts
    else:
        x, y = as_float(x, dtype), as_float(y, dtype)
        summaries[name] = (summary(x), summary(y))
        edges = np.unique(pc.quantile(x, q=[i / 10 for i in range(1, 10)],
                                      interpolation="lower").to_numpy())
        p, q = (np.bincount(np.searchsorted(edges, c.drop_null().to_numpy(), side="right"),
                            minlength=len(edges) + 1).astype(float) for c in (x, y))
    metrics[name] = compare(p, q)
t2 = time.perf_counter()
print("METRICS " + json.dumps(metrics))
print(f"WORK {t2 - t1:.4f} IMPORT {t1 - t0:.4f}")
"""

EVIDENTLY = r"""
import sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
t1 = time.perf_counter()
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t2 = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
result = snapshot.dict()
t3 = time.perf_counter()
print(f"WORK {t3 - t1:.4f} IMPORT {t1 - t0:.4f} READ {t2 - t1:.4f} CHECK {t3 - t2:.4f} "
      f"METRICS {len(result['metrics'])}")
"""

WHYLOGS = r"""
import sys, time, warnings, logging
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
t0 = time.perf_counter()
import pandas as pd
import whylogs as why
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores
t1 = time.perf_counter()
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t2 = time.perf_counter()
ref_view = why.log(pandas=reference).view()
cur_view = why.log(pandas=current).view()
scores = calculate_drift_scores(target_view=cur_view, reference_view=ref_view,
                                with_thresholds=True)
t3 = time.perf_counter()
print(f"WORK {t3 - t1:.4f} IMPORT {t1 - t0:.4f} READ {t2 - t1:.4f} CHECK {t3 - t2:.4f} "
      f"COLUMNS {len(scores)}")
"""


def parse(r: Run) -> dict[str, float]:
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("WORK ")][-1].split()
    return {line[i]: float(line[i + 1]) for i in range(0, len(line) - 1, 2)}


def metrics_of(r: Run) -> dict:
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("METRICS ")][-1]
    return json.loads(line[len("METRICS "):])


def ensure_peer_venv() -> None:
    if not PEER_PY.exists():
        print(f"creating peer venv {PEER_VENV}", flush=True)
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv",
                        str(PEER_VENV)], check=True)
    have = subprocess.run([str(PEER_PY), "-m", "pip", "freeze"], capture_output=True,
                          text=True).stdout.lower().split()
    if any(pin.lower() not in have for pin in PEER_PINS):
        print(f"installing into {PEER_VENV}: {' '.join(PEER_PINS)}", flush=True)
        subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", *PEER_PINS], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true", help="buildenv vs the reference only")
    args = ap.parse_args()
    if not args.no_peers:
        ensure_peer_venv()
    from buildenv.monitor.statistics import BATCH_ROWS

    root = work_dir("drift") / "repo"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.buildenv]\n")
    files = {}
    for label, rows in (("", args.rows), ("-small", args.rows // 4)):
        for version in ("a", "b"):
            data = root / "data" / f"{version}{label}.parquet"
            stamp = data.with_suffix(".seed")
            want = f"{SEED}:{rows}:{version}:{json.dumps(COLUMNS)}"
            if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
                print(f"generating {data} ({rows} rows)", flush=True)
                make_data(data, rows, SEED, version == "b")
                stamp.write_text(want)
            files[version + label] = data
        name = f"bench{label}"
        (root / "environments" / f"{name}.yaml").write_text(
            env_yaml(name, f"data/a{label}.parquet"))
        (root / "environments" / f"{name}-b.yaml").write_text(
            env_yaml(f"{name}-b", f"data/b{label}.parquet"))  # locking it warms the stat cache
    run([BUILDENV, "lock"], cwd=root)
    a, b = files["a"], files["b"]
    spec = json.dumps(COLUMNS)
    cache = root / ".buildenv" / "cache" / "drift"
    print(f"# bench_drift ({machine()})\n\n2 versions x {args.rows} rows x {len(COLUMNS)} "
          f"columns, {a.stat().st_size / 2**20:.0f} + {b.stat().st_size / 2**20:.0f} MiB "
          f"Parquet; batch {BATCH_ROWS} rows", flush=True)

    def cli(env: str, against: str) -> Run:
        r = run([BUILDENV, "drift", env, "--dataset", "events", "--against", against],
                cwd=root, check=False)
        if r.returncode not in (0, 1):
            raise RuntimeError(r.stderr[-2000:])
        return r

    ours = "buildenv run_drift (in-process)"
    cases = {
        "buildenv drift (CLI)": lambda: cli("bench", "data/b.parquet"),
        "buildenv drift (CLI, baseline cached)": lambda: cli("bench", "data/b.parquet"),
        ours: lambda: run([MAIN_PY, "-c", BUILDENV_INPROC, root, "bench", "data/b.parquet",
                           str(BATCH_ROWS)]),
        "reference (pyarrow in memory)": lambda: run([MAIN_PY, "-c", REFERENCE, a, b, spec]),
    }
    clear = lambda: shutil.rmtree(cache, ignore_errors=True)  # noqa: E731
    series = alternate(cases, args.repeats, before={"buildenv drift (CLI)": clear})
    if not args.no_peers:
        peers = {"Evidently DataDriftPreset": lambda: run([PEER_PY, "-c", EVIDENTLY, a, b]),
                 "whylogs profiles + drift scores": lambda: run([PEER_PY, "-c", WHYLOGS, a, b])}
        series.update(alternate(peers, args.peer_repeats, warmup=False))

    work = {name: statistics.median(parse(r)["WORK"] for r in s.runs)
            for name, s in series.items() if "CLI" not in name}
    e2e = series["buildenv drift (CLI)"].median
    rows = []
    for name, s in series.items():
        w = work.get(name)
        rows.append([name, f"{s.median:.2f}", f"{s.median / e2e:.2f}x",
                     f"{w:.2f}" if w is not None else "-",
                     f"{w / work[ours]:.2f}x" if w is not None else "-", f"{s.rss_mb:.0f}"])
    print()
    print(table(["tool", "end-to-end s", "vs buildenv CLI", "work s", "work vs run_drift",
                 "peak RSS MiB"], rows))
    for name in ("Evidently DataDriftPreset", "whylogs profiles + drift scores"):
        if name in series:
            mid = sorted((parse(r) for r in series[name].runs), key=lambda p: p["WORK"])[0]
            print(f"\n{name}: read_parquet {mid['READ']:.2f} s + drift {mid['CHECK']:.2f} s "
                  f"(imports {mid['IMPORT']:.2f} s)")

    goals: dict[str, bool] = {}
    speed = work["reference (pyarrow in memory)"] / work[ours]
    goals[">= 0.8x the reference's speed (work)"] = speed >= 0.8
    lines = [f"- speed vs the in-memory reference (work): **{speed:.2f}x** (goal >= 0.8x: "
             f"{verdict(speed >= 0.8)})"]
    for name in ("Evidently DataDriftPreset", "whylogs profiles + drift scores"):
        if name in series:
            ratio_e2e = series[name].median / e2e
            ratio_work = work[name] / work[ours]
            goals[f">= 5x {name}"] = ratio_e2e >= 5 and ratio_work >= 5
            lines.append(f"- {name} / buildenv: end-to-end **{ratio_e2e:.1f}x**, work "
                         f"**{ratio_work:.1f}x** (goal >= 5x: {verdict(goals[f'>= 5x {name}'])})")
    ref_m = metrics_of(series["reference (pyarrow in memory)"].runs[-1])
    our_m = metrics_of(series[ours].runs[-1])
    worst = max(abs(our_m[c][k] - ref_m[c][k]) for c in COLUMNS for k in ("linf", "jsd", "psi"))
    lines.append(f"- largest |difference| of L-inf/JSD/PSI vs the reference: {worst:.2g} (bin "
                 "edges from a 100k sample vs exact deciles)")

    # memory: bounded by the batch size, not the data
    def rss(env: str, against: str, batch: int) -> float:
        return max(run([MAIN_PY, "-c", BUILDENV_INPROC, root, env, against, str(batch)]
                       ).maxrss_kb for _ in range(2)) / 1024

    big, small = rss("bench", "data/b.parquet", BATCH_ROWS), rss("bench-small",
                                                                 "data/b-small.parquet",
                                                                 BATCH_ROWS)
    batch_small, batch_big = (rss("bench", "data/b.parquet", n) for n in (1 << 16, 1 << 20))
    ref_small = run([MAIN_PY, "-c", REFERENCE, files["a-small"], files["b-small"], spec]
                    ).maxrss_kb / 1024
    ok = big - small < 64
    goals["memory bounded by the batch (RSS about the same at 1/4 of the rows)"] = ok
    lines.append(f"- peak RSS of run_drift: {big:.0f} MiB on {args.rows:,} rows vs {small:.0f} "
                 f"MiB on {args.rows // 4:,} rows (bounded: {verdict(ok)}); batch 65,536 rows: "
                 f"{batch_small:.0f} MiB, 1,048,576 rows: {batch_big:.0f} MiB; the reference: "
                 f"{series['reference (pyarrow in memory)'].rss_mb:.0f} vs {ref_small:.0f} MiB")
    print("\n" + "\n".join(lines))
    if not args.no_peers:
        versions = subprocess.run([str(PEER_PY), "-c", "import importlib.metadata as m; print("
                                   "', '.join(f'{p} {m.version(p)}' for p in ('evidently', "
                                   "'whylogs', 'pandas', 'numpy', 'pyarrow')))"],
                                  capture_output=True, text=True).stdout.strip()
        print(f"\npeer venv: {versions}")
    print("\n## Goals\n" + "\n".join(f"- {k}: {verdict(v)}" for k, v in goals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
