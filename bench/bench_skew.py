"""Benchmark `buildenv skew` against `buildenv drift` on the same data (issue #27's goal: skew
within 1.25x drift).

    .venv/bin/python bench/bench_skew.py [--rows 5000000] [--serving-rows 1000000] [--repeats 3]

Data: bench_drift's seeded generator: a locked training version of `events` (5M rows x 12
columns: ints, floats with nulls, a timestamp, a date, strings, a bool) and a shifted batch of
serving data (1M rows, the same columns), as Parquet and as JSON lines (what the serving app's
request log is). Each case runs in its own child process, round after round, page cache warm,
the baseline statistics cache off (`use_cache=False`), and prints the seconds of its work after
its imports:

- drift: `run_drift(env, "events", against=serving.parquet)`, the reference;
- skew: `run_skew(env, "events", serving.parquet)`: the same comparison with skew's thresholds,
  columns and report;
- skew, JSON lines: the serving data as a request log;
- skew --key event_id: plus the feature-value join of the 1M serving rows to the 5M training
  rows (a second streaming pass over the training data).

Goal: skew (Parquet) / drift <= 1.25. The keyed and JSON-lines variants are reported for what
they cost on top (no goal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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
from bench_drift import COLUMNS, SEED, env_yaml, make_data

INPROC = r"""
import sys, time
t0 = time.perf_counter()
from buildenv.core.project import Project
from buildenv.monitor.drift import run_drift, run_skew
t1 = time.perf_counter()
project = Project.discover(sys.argv[1])
kind, uri, key = sys.argv[2], sys.argv[3], sys.argv[4:]
if kind == "drift":
    result = run_drift(project, "bench", "events", against=uri, use_cache=False)
else:
    result = run_skew(project, "bench", "events", uri, key=key or None, use_cache=False)
t2 = time.perf_counter()
print(f"WORK {t2 - t1:.4f} IMPORT {t1 - t0:.4f} ALERTS {len(result.alerts)}")
"""


def parse(r: Run) -> float:
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("WORK ")][-1].split()
    return float(line[1])


def write_jsonl(parquet: Path, path: Path) -> None:
    """The serving batch as JSON lines, written in slices (bounded memory)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=100_000):
            columns = {}
            for name in batch.schema.names:
                col = batch.column(batch.schema.get_field_index(name))
                if COLUMNS[name] in ("date", "timestamp"):
                    col = pc.cast(col, "string")
                columns[name] = col.to_pylist()
            for values in zip(*columns.values()):
                out.write(json.dumps(dict(zip(columns, values))) + "\n")
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--serving-rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds: 2,000 x 1,000 rows, one round, exit 0 whatever the "
                    "ratio (the smoke test: does the benchmark still run)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.serving_rows, args.repeats = 2_000, 1_000, 1

    root = work_dir("skew") / "repo"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.buildenv]\n")
    for name, rows, shifted in (("train", args.rows, False), ("serving", args.serving_rows,
                                                                True)):
        data = root / "data" / f"{name}.parquet"
        stamp = data.with_suffix(".seed")
        want = f"{SEED}:{rows}:{shifted}:{json.dumps(COLUMNS)}"
        if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
            print(f"generating {data} ({rows} rows)", flush=True)
            make_data(data, rows, SEED, shifted)
            if name == "serving":
                write_jsonl(data, data.with_suffix(".jsonl"))
            stamp.write_text(want)
    (root / "environments" / "bench.yaml").write_text(env_yaml("bench", "data/train.parquet"))
    run([BUILDENV, "lock"], cwd=root)
    train = root / "data" / "train.parquet"
    jsonl = root / "data" / "serving.jsonl"
    print(f"# bench_skew ({machine()})\n\ntraining {args.rows} rows "
          f"({train.stat().st_size / 2**20:.0f} MiB Parquet) x serving {args.serving_rows} rows "
          f"({jsonl.stat().st_size / 2**20:.0f} MiB as JSON lines), {len(COLUMNS)} columns",
          flush=True)

    def case(kind: str, uri: str, *key: str):
        return lambda: run([MAIN_PY, "-c", INPROC, root, kind, uri, *key])

    cases = {"drift --against serving.parquet": case("drift", "data/serving.parquet"),
             "skew --serving serving.parquet": case("skew", "data/serving.parquet"),
             "skew --serving serving.jsonl": case("skew", "data/serving.jsonl"),
             "skew --serving serving.parquet --key event_id": case(
                 "skew", "data/serving.parquet", "event_id")}
    series = alternate(cases, args.repeats)
    work = {name: statistics.median(parse(r) for r in s.runs) for name, s in series.items()}
    base = work["drift --against serving.parquet"]
    rows = [(name, f"{work[name]:.2f}", f"{work[name] / base:.2f}x", f"{s.rss_mb:.0f}")
            for name, s in series.items()]
    print(table(["case", "work s (median)", "vs drift", "peak RSS MiB"], rows))
    ratio = work["skew --serving serving.parquet"] / base
    ok = ratio <= 1.25
    print(f"\nskew / drift on the same data: {ratio:.2f}x (goal <= 1.25x): {verdict(ok)}")
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
