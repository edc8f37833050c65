"""Benchmark partitioned datasets, the executors and ctx.scan (docs/scale.md).

    .venv/bin/python bench/bench_scale.py [--rows 20000000] [--files 100] [--days 365]
                                          [--day-mb 8] [--repeats 3]
                                          [--only lock|relock|stats|scan] [--before TREE]

1. lock (a dataset of --days files, one per day, --day-mb each):
   - full lock: `buildenv lock` (cold stat cache) vs a bare Python process that sha256es every
     file (8 MiB reads, one after the other). Goal: within 1.1x.
   - relock after adding one day: `buildenv lock` (warm stat cache) vs a bare Python process
     that stats every file and sha256es the new one; the same two in-process (no interpreter
     or CLI start-up: `lock_environments` vs the bare loop). Goal: 1.2x.
   `--only relock`: the in-process relock alone, in `--repeats` processes (with `--before
   TREE`, alternating with processes relocking with the buildenv package under TREE).
2. stats (--rows rows in --files files, hive-partitioned by date, 6 columns): in one child
   process, alternating: a bare pyarrow decode of the same columns (`iter_batches` over every
   file), `validate_env` and `run_drift` (against a shifted copy) with the local executor, and
   the same with the Ray executor (a local Ray started once, num_cpus = cores, its start-up
   timed separately). The results of local and Ray are compared (diagnostics, statistics JSON).
   Goals: local within 1.25x the bare decode; Ray within 1.5x local; identical results.
3. scan: `ctx.scan` over the --rows dataset (batch 262,144 rows) in a fresh process: peak RSS
   above the process's baseline (goal: <= 2 batches + 200 MiB) and time vs the bare decode.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BUILDENV,
    MAIN_PY,
    alternate,
    machine,
    run,
    table,
    verdict,
    work_dir,
)

SEED = 20261201

SHA_ALL = """
import hashlib, sys
from pathlib import Path
buf = bytearray(8 << 20); view = memoryview(buf)
for path in sorted(Path(sys.argv[1]).rglob("*.parquet")):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
print("ok")
"""

STAT_AND_HASH_ONE = """
import hashlib, os, sys
from pathlib import Path
for folder, dirs, files in os.walk(sys.argv[1]):
    for name in files:
        os.stat(os.path.join(folder, name))
h = hashlib.sha256()
buf = bytearray(8 << 20); view = memoryview(buf)
with open(sys.argv[2], "rb", buffering=0) as f:
    while n := f.readinto(view):
        h.update(view[:n])
print("ok")
"""

RELOCK_INPROC = r"""
import hashlib, json, os, shutil, statistics, sys, time
from pathlib import Path
if os.environ.get("BENCH_BEFORE_TREE"):  # --before: that tree's buildenv, not the editable one
    sys.path.insert(0, os.environ["BENCH_BEFORE_TREE"])
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable__" not in getattr(f, "__module__", "")]
from buildenv.core.project import Project
from buildenv.labels.locking import lock_environments
from buildenv.env.resolve import Multiverse
root, data, new, spare = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
def bare():
    for folder, dirs, files in os.walk(data):
        for name in files:
            os.stat(os.path.join(folder, name))
    h = hashlib.sha256()
    with open(new, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
ours, floor, ours_cpu, floor_cpu = [], [], [], []
for _ in range(int(sys.argv[5])):
    new.unlink(missing_ok=True)
    lock_environments(Multiverse(Project.discover(root)), ["days"])  # the lock without it
    new.parent.mkdir(exist_ok=True)
    shutil.copy2(spare, new)
    past = time.time() - 60
    os.utime(new, (past, past))
    t, c = time.perf_counter(), time.process_time()
    bare()
    floor.append(time.perf_counter() - t); floor_cpu.append(time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    lock_environments(Multiverse(Project.discover(root)), ["days"])
    ours.append(time.perf_counter() - t); ours_cpu.append(time.process_time() - c)
print(json.dumps({"ours": statistics.median(ours), "bare": statistics.median(floor),
                  "ours_cpu": statistics.median(ours_cpu),
                  "bare_cpu": statistics.median(floor_cpu)}))
"""

STATS_INPROC = r"""
import json, shutil, statistics, sys, time
from pathlib import Path
import pyarrow.parquet as pq
from buildenv.core.project import Project
from buildenv.data.executor import LocalExecutor, RayExecutor
from buildenv.data.lock.lockfile import read_lock
from buildenv.data.validate.validate import validate_env
from buildenv.env.resolve import Multiverse
from buildenv.monitor.drift import run_drift, write_stats
root, repeats = Path(sys.argv[1]), int(sys.argv[2])
project = Project.discover(root)
res = Multiverse(project).resolve("stats")
lock = read_lock(project, "stats")
files = sorted((root / "data" / "events").rglob("*.parquet"))
COLUMNS = ["user", "amount", "score", "kind", "ok"]
def bare():
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=262144, columns=COLUMNS):
            pass
def validate(executor):
    shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)
    return [d.to_json() for d in validate_env(res, project, lock.pins(),
                                              manifests=lock.manifests(), executor=executor)]
def drift(executor, name):
    result = run_drift(project, "stats", "events", against="cand/events/", use_cache=False,
                       executor=executor)
    out = root / f"stats-{name}.json"
    write_stats(result, project, out)
    text = out.read_text()
    return text.replace(f"stats-{name}.json", "stats.json")
local = LocalExecutor()
t = time.perf_counter(); ray = RayExecutor(); ray.prepare(); ray_start = time.perf_counter() - t
times = {k: [] for k in ("bare decode", "validate local", "validate ray", "drift local",
                         "drift ray")}
results = {}
bare()  # page cache
for i in range(repeats):
    for name, fn in (("bare decode", bare), ("validate local", lambda: validate(local)),
                     ("validate ray", lambda: validate(ray)),
                     ("drift local", lambda: drift(local, "local")),
                     ("drift ray", lambda: drift(ray, "ray"))):
        t = time.perf_counter(); value = fn(); times[name].append(time.perf_counter() - t)
        results[name] = value
    print("round", i + 1, {k: round(v[-1], 2) for k, v in times.items()}, file=sys.stderr,
          flush=True)
ray.close()
print(json.dumps({"ray_start": ray_start,
                  "times": {k: statistics.median(v) for k, v in times.items()},
                  "spread": {k: [min(v), max(v)] for k, v in times.items()},
                  "same_validate": results["validate local"] == results["validate ray"],
                  "same_drift": results["drift local"] == results["drift ray"],
                  "diagnostics": len(results["validate local"])}))
"""

SCAN = r"""
import json, sys, time
from pathlib import Path
import pandas, pyarrow.parquet as pq
from buildenv.training.context import BuildContext
from buildenv.core.project import Project
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
root, mode, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
project = Project.discover(root)
res = Multiverse(project).resolve("stats")
lock = read_lock(project, "stats")
ctx = BuildContext(res.env, 0, project, lock.pins(), manifests=lock.manifests())
COLUMNS = ["user", "amount", "score", "kind", "ok"]
Path("/proc/self/clear_refs").write_text("5")
base = status("VmRSS:")
t = time.perf_counter()
rows = 0
largest = 0
if mode == "scan":
    for frame in ctx.scan("events", columns=COLUMNS, batch_rows=batch):
        rows += len(frame)
        if rows <= 3 * batch:
            largest = max(largest, int(frame.memory_usage(deep=True).sum()))
else:
    for f in sorted((root / "data" / "events").rglob("*.parquet")):
        for b in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=COLUMNS):
            rows += len(b.to_pandas())
print(json.dumps({"seconds": time.perf_counter() - t, "base": base, "batch_mib": largest / 2**20,
                  "peak": status("VmHWM:"), "rows": rows, "errors": len(ctx.gate_errors)}))
"""

STATS_ENV = """name: stats
datasets:
  events:
    uri: data/events/
    partitions: [date]
    columns:
      date: {dtype: date, range: ["2026-01-01", "2026-12-31"]}
      user: {dtype: int64, nullable: false, range: [0, 1000000]}
      amount: {dtype: float64, range: [0, 10000]}
      score: {dtype: float64}
      kind: {dtype: string, domain: [a, b, c, d, e]}
      ok: {dtype: bool, nullable: false}
"""

DAYS_ENV = """name: days
datasets:
  days:
    uri: data/days/
    partitions: [date]
    columns:
      date: {dtype: date}
      id: {dtype: int64}
      x: {dtype: float64}
"""


def day(i: int) -> str:
    return (dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat()


def write_repo(root: Path) -> None:
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    (root / "environments" / "stats.yaml").write_text(STATS_ENV)
    (root / "environments" / "days.yaml").write_text(DAYS_ENV)


def make_days(root: Path, days: int, day_mb: int) -> Path:
    """One Parquet file per day, ~day_mb each (random floats: incompressible)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "data" / "days"
    stamp = folder / ".seed"
    want = f"{SEED}:{days}:{day_mb}"
    if stamp.is_file() and stamp.read_text() == want:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rows = day_mb * (1 << 20) // 16
    rng = np.random.default_rng(SEED)
    for i in range(days + 1):  # the last one is the day added by the relock benchmark
        target = folder / f"date={day(i)}" / "part-0.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": np.arange(rows) + i * rows, "x": rng.random(rows)}),
                       target, compression="none")
    new = folder / f"date={day(days)}" / "part-0.parquet"
    shutil.move(new, root / "data" / "spare-day.parquet")  # outside the dataset until added
    new.parent.rmdir()
    stamp.write_text(want)
    print(f"generated {days} days x ~{day_mb} MiB", flush=True)
    return folder


def make_events(root: Path, rows: int, files: int, name: str, shift: float) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / name / "events" if name != "data" else root / "data" / "events"
    stamp = folder / ".seed"
    want = f"{SEED}:{rows}:{files}:{shift}"
    if stamp.is_file() and stamp.read_text() == want:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    per = rows // files
    kinds = np.array(list("abcde"))
    for i in range(files):
        rng = np.random.default_rng([SEED, i, int(shift * 10)])
        target = folder / f"date={day(i * 3 % 365)}" / f"part-{i:03d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "user": rng.integers(0, 1_000_000, per),
            "amount": np.round(rng.gamma(2.0, 50.0 + shift * 10, per), 2),
            "score": rng.normal(shift, 1.0, per),
            "kind": kinds[rng.integers(0, 5, per)],
            "ok": rng.random(per) < 0.7,
        }), target)
    stamp.write_text(want)
    print(f"generated {name}: {files} files x {per} rows", flush=True)
    return folder


def drop_statcache(root: Path):
    return lambda: (root / ".buildenv" / "statcache.json").unlink(missing_ok=True)


def bench_lock(root: Path, days: int, day_mb: int, repeats: int) -> tuple[str, dict]:
    folder = make_days(root, days, day_mb)
    spare = root / "data" / "spare-day.parquet"
    new = folder / f"date={day(days)}" / "part-0.parquet"
    new.unlink(missing_ok=True)
    total = sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 2**20
    full = alternate({"buildenv lock days (cold stat cache)": lambda: run(
        [BUILDENV, "lock", "days"], cwd=root),
        "bare sha256 of every file (one process)": lambda: run([MAIN_PY, "-c", SHA_ALL, folder])},
        repeats, before={"buildenv lock days (cold stat cache)": drop_statcache(root)})
    lock_s, bare_s = full["buildenv lock days (cold stat cache)"], \
        full["bare sha256 of every file (one process)"]

    def add_day() -> None:
        new.unlink(missing_ok=True)
        run([BUILDENV, "lock", "days"], cwd=root)  # the lock and stat cache without it
        new.parent.mkdir(exist_ok=True)
        shutil.copy2(spare, new)
        past = dt.datetime.now().timestamp() - 60
        os.utime(new, (past, past))

    relock = alternate({"buildenv lock days (one day added)": lambda: run(
        [BUILDENV, "lock", "days"], cwd=root),
        "bare: stat every file + sha256 the new one": lambda: run(
            [MAIN_PY, "-c", STAT_AND_HASH_ONE, folder, new])},
        repeats, before={"buildenv lock days (one day added)": add_day,
                         "bare: stat every file + sha256 the new one": add_day})
    inproc = json.loads(run([MAIN_PY, "-c", RELOCK_INPROC, root, folder, new, spare,
                             str(max(repeats, 5))]).stdout)
    new.unlink(missing_ok=True)
    r_lock = relock["buildenv lock days (one day added)"]
    r_bare = relock["bare: stat every file + sha256 the new one"]
    rows = [[s.name, f"{s.median:.2f}", s.spread(), f"{s.cpu:.2f}", f"{s.rss_mb:.0f}"]
            for s in (*full.values(), *relock.values())]
    full_ratio, full_cpu = lock_s.median / bare_s.median, lock_s.cpu / bare_s.cpu
    rel_ratio = r_lock.median / r_bare.median
    in_ratio = inproc["ours"] / inproc["bare"]
    text = "\n".join([
        f"{days} files ({total:.0f} MiB, ~{day_mb} MiB a day), median of {repeats} "
        "alternating rounds.", "",
        table(["command", "wall s", "range s", "CPU s", "peak RSS MiB"], rows), "",
        f"- full lock / bare sha256: **{full_ratio:.2f}x** wall, {full_cpu:.2f}x CPU (goal "
        f"<= 1.1x: {verdict(full_ratio <= 1.1)})",
        f"- relock after one day, end to end: **{rel_ratio:.2f}x** ({r_lock.median:.2f} s vs "
        f"{r_bare.median:.2f} s: interpreter, CLI and resolution are most of it)",
        f"- relock after one day, in-process (`lock_environments` vs the bare stat + hash "
        f"loop): {inproc['ours'] * 1000:.0f} ms vs {inproc['bare'] * 1000:.0f} ms = "
        f"**{in_ratio:.2f}x** (goal <= 1.2x: {verdict(in_ratio <= 1.2)})",
    ])
    return text, {"full lock <= 1.1x bare sha256": full_ratio <= 1.1,
                  "relock (in-process) <= 1.2x stat + hash one": in_ratio <= 1.2}


def bench_relock(root: Path, days: int, day_mb: int, repeats: int, before: str | None
                 ) -> tuple[str, dict]:
    """The in-process relock after one added day alone (the goal's measure; ~1 min once the
    days exist), `repeats` child processes of 5 relocks each; with `before`, as many with the
    buildenv package under that tree, alternating."""
    folder = make_days(root, days, day_mb)
    spare = root / "data" / "spare-day.parquet"
    new = folder / f"date={day(days)}" / "part-0.parquet"
    trees = {"this tree": None, **({"--before tree": before} if before else {})}
    found: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(repeats):
        for name, tree in (list(trees.items()) if i % 2 == 0 else list(trees.items())[::-1]):
            env = {**os.environ, **({"BENCH_BEFORE_TREE": tree} if tree else {})}
            cache = root / ".buildenv" / "statcache.json"
            own = root / f"statcache-{'before' if tree else 'this'}.json"  # its own form
            if own.exists():
                shutil.copy(own, cache)
            found[name].append(json.loads(run([MAIN_PY, "-c", RELOCK_INPROC, root, folder, new,
                                               spare, "5"], env=env).stdout))
            shutil.copy(cache, own)
            print(f"  round {i + 1}/{repeats}, {name}: {found[name][-1]}", flush=True)
    new.unlink(missing_ok=True)
    lines, goals = [], {}
    for name, runs in found.items():
        ratios = sorted(r["ours"] / r["bare"] for r in runs)
        cpu = sorted(r["ours_cpu"] / r["bare_cpu"] for r in runs)
        ours = statistics.median(r["ours"] for r in runs)
        bare = statistics.median(r["bare"] for r in runs)
        ratio = statistics.median(ratios)
        lines.append(f"- relock after one day, in-process, {name}: {ours * 1000:.1f} ms vs "
                     f"{bare * 1000:.1f} ms; median of the {len(runs)} processes' ratios "
                     f"**{ratio:.2f}x** wall ({', '.join(f'{x:.2f}' for x in ratios)}), "
                     f"{statistics.median(cpu):.2f}x CPU (goal <= 1.2x: {verdict(ratio <= 1.2)})")
        goals[f"relock (in-process, {name}) <= 1.2x stat + hash one"] = ratio <= 1.2
    return "\n".join(lines), goals


def bench_stats(root: Path, rows: int, files: int, repeats: int) -> tuple[str, dict]:
    make_events(root, rows, files, "data", 0.0)
    make_events(root, rows, files, "cand", 0.3)
    run([BUILDENV, "lock", "stats"], cwd=root)
    result = run([MAIN_PY, "-c", STATS_INPROC, root, str(repeats)], check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    t = data["times"]
    local_v, ray_v = t["validate local"] / t["bare decode"], t["validate ray"] / t["validate local"]
    local_d, ray_d = t["drift local"] / t["bare decode"], t["drift ray"] / t["drift local"]
    rows_t = [[name, f"{v:.2f}", f"{data['spread'][name][0]:.2f}-{data['spread'][name][1]:.2f}",
               f"{v / t['bare decode']:.2f}x"] for name, v in t.items()]
    same = data["same_validate"] and data["same_drift"]
    text = "\n".join([
        f"{rows:,} rows in {files} files (hive-partitioned by date; 5 stored columns), median "
        f"of {repeats} rounds in one process; a local Ray ({os.cpu_count()} CPUs) started once "
        f"in {data['ray_start']:.1f} s (not in the times).", "",
        table(["work", "median s", "range s", "x bare decode"], rows_t), "",
        f"- validate, local / bare decode: **{local_v:.2f}x** (goal <= 1.25x: "
        f"{verdict(local_v <= 1.25)}); Ray / local: **{ray_v:.2f}x** (goal <= 1.5x: "
        f"{verdict(ray_v <= 1.5)})",
        f"- drift (two versions: baseline twice, candidate once), local / bare decode of one "
        f"version: {local_d:.2f}x; Ray / local: **{ray_d:.2f}x** (goal <= 1.5x: "
        f"{verdict(ray_d <= 1.5)})",
        f"- identical results (diagnostics: {data['diagnostics']}; statistics JSON byte for "
        f"byte): {verdict(same)}",
    ])
    return text, {"validate local <= 1.25x decode": local_v <= 1.25,
                  "validate ray <= 1.5x local": ray_v <= 1.5,
                  "drift ray <= 1.5x local": ray_d <= 1.5, "identical results": same}


def bench_scan(root: Path, rows: int, files: int) -> tuple[str, dict]:
    make_events(root, rows, files, "data", 0.0)
    run([BUILDENV, "lock", "stats"], cwd=root)
    batch = 262_144
    out = {}
    for mode in ("scan", "bare"):
        r = run([MAIN_PY, "-c", SCAN, root, mode, str(batch)])
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    bound = 2 * out["scan"]["batch_mib"] + 200  # a batch as the training gets it (pandas)
    grew = out["scan"]["peak"] - out["scan"]["base"]
    ok = grew <= bound and out["scan"]["errors"] == 0
    text = "\n".join([
        f"ctx.scan of {out['scan']['rows']:,} rows (label-free dataset: every row), batches "
        f"of {batch:,} rows as pandas:", "",
        table(["reader", "seconds", "RSS growth MiB"],
              [["ctx.scan (verified, typed, pandas)", f"{out['scan']['seconds']:.1f}",
                f"{grew:.0f}"],
               ["bare pyarrow iter_batches -> pandas", f"{out['bare']['seconds']:.1f}",
                f"{out['bare']['peak'] - out['bare']['base']:.0f}"]]), "",
        f"- peak RSS growth {grew:.0f} MiB, bound 2 batches + 200 MiB = {bound:.0f} MiB: "
        f"{verdict(ok)}; time {out['scan']['seconds'] / out['bare']['seconds']:.2f}x the bare "
        "decode"])
    return text, {"ctx.scan memory bounded": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--day-mb", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["lock", "relock", "stats", "scan"], action="append")
    ap.add_argument("--before", metavar="TREE",
                    help="with --only relock: also relock with the buildenv package under TREE "
                         "(e.g. a `git archive` of an older commit), alternating")
    args = ap.parse_args()
    only = set(args.only or ["lock", "stats", "scan"])
    root = work_dir("scale")
    write_repo(root)
    print(f"# bench_scale ({machine()})\n", flush=True)
    sections, goals = [], {}
    if "lock" in only:
        text, g = bench_lock(root, args.days, args.day_mb, args.repeats)
        sections += ["## Lock of a partitioned dataset", text]
        goals.update(g)
    if "relock" in only:
        text, g = bench_relock(root, args.days, args.day_mb, args.repeats, args.before)
        sections += ["## Relock of a partitioned dataset after one added day", text]
        goals.update(g)
    if "stats" in only:
        text, g = bench_stats(root, args.rows, args.files, args.repeats)
        sections += ["## Validate and drift: local and Ray executors", text]
        goals.update(g)
    if "scan" in only:
        text, g = bench_scan(root, args.rows, args.files)
        sections += ["## ctx.scan memory", text]
        goals.update(g)
    print("\n\n".join(sections))
    print("\n## Goals\n" + "\n".join(f"- {k}: {verdict(v)}" for k, v in goals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
