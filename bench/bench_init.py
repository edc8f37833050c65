"""Benchmark `buildenv init --data` (environment inference) against a bare in-memory profile.

    .venv/bin/python bench/bench_init.py [--rows 2000000] [--repeats 3]

Data: a seeded CSV (ids, three low-cardinality strings, two floats with 3% nulls, a date, an
ISO timestamp, a bool, a free-text column). Each case runs in its own child process, alternating
round by round (peak RSS from GNU time):

- `buildenv init --env bench --data data/bench.csv` (the CLI: streamed through the data gate,
  kinds classified by pattern, exact duplicate counts for key candidates);
- baseline: pyarrow `read_csv` with its own type inference (the whole file in memory), then per
  column the facts init writes: null count, min/max, distinct count (which also says unique);
- pandas: `read_csv` + `describe(include="all")` + `nunique()`, what a person would type.

Goals: within 3x of the in-memory pyarrow baseline's time (init also decides types value by
value and counts duplicates exactly, and streams); peak memory below the baseline's on a file
larger than pyarrow's read-ahead (about 30 CSV blocks of 8 MiB).
"""

from __future__ import annotations

import argparse
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

GENERATE = r"""
import sys
import numpy as np, pyarrow as pa, pyarrow.csv as pacsv
rows, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(26)
schema = pa.schema([("id", pa.int64()), ("plan", pa.string()), ("country", pa.string()),
                    ("device", pa.string()), ("spend", pa.float64()), ("score", pa.float64()),
                    ("day", pa.string()), ("seen_at", pa.string()), ("churned", pa.bool_()),
                    ("note", pa.string())])
with pacsv.CSVWriter(path, schema) as out:
    for start in range(0, rows, 500_000):
        n = min(500_000, rows - start)
        pick = lambda values: pa.array(np.array(values)[rng.integers(0, len(values), n)])
        spend = rng.gamma(2.0, 40.0, n)
        out.write_table(pa.table({
            "id": np.arange(start, start + n),
            "plan": pick(["basic", "premium", "free"]),
            "country": pick(["BR", "DE", "FR", "IN", "MX", "US"]),
            "device": pick(["ios", "android", "web"]),
            "spend": pa.array(spend, mask=rng.random(n) < 0.03),
            "score": pa.array(rng.normal(50, 12, n), mask=rng.random(n) < 0.03),
            "day": pa.array([f"2026-{m:02d}-{d:02d}" for m, d in
                             zip(rng.integers(1, 13, n), rng.integers(1, 29, n))]),
            "seen_at": pa.array([f"2026-03-{d:02d}T{h:02d}:15:00Z" for d, h in
                                 zip(rng.integers(1, 29, n), rng.integers(0, 24, n))]),
            "churned": rng.random(n) < 0.2,
            "note": pa.array([f"note {i}" for i in rng.integers(0, 10**9, n)]),
        }, schema=schema))
"""

BASELINE = r"""
import sys, time
t = time.perf_counter()
import pyarrow.csv as pacsv, pyarrow.compute as pc, pyarrow as pa
table = pacsv.read_csv(sys.argv[1])
facts = {}
for name, column in zip(table.column_names, table.columns):
    facts[name] = [column.null_count, pc.count_distinct(column).as_py()]
    if not (pa.types.is_string(column.type) or pa.types.is_boolean(column.type)):
        facts[name] += [v.as_py() for v in pc.min_max(column).values()]
print(len(facts), table.num_rows)
"""

PANDAS = r"""
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1])
summary = df.describe(include="all")
distinct = df.nunique()
print(summary.shape, int(distinct.sum()))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = work_dir("init")
    data = root / "data" / "bench.csv"
    data.parent.mkdir(exist_ok=True)
    marker = root / ".rows"
    if not data.exists() or not marker.exists() or marker.read_text() != str(args.rows):
        print(f"generating {args.rows:,} rows", flush=True)
        run([MAIN_PY, "-c", GENERATE, str(args.rows), data])
        marker.write_text(str(args.rows))
    (root / "pyproject.toml").write_text("[tool.buildenv]\n[tool.buildenv.trainings.m]\n"
                                         'entry = "m.py:train"\n')
    target = root / "environments" / "bench.yaml"
    print(f"{machine()}; {data.stat().st_size / 2**20:.0f} MiB CSV, {args.rows:,} rows",
          flush=True)
    series = alternate({
        "buildenv init": lambda: run([BUILDENV, "init", "--env", "bench", "--data",
                                      "data/bench.csv", "--no-progress"], cwd=root),
        "pyarrow in memory": lambda: run([MAIN_PY, "-c", BASELINE, data]),
        "pandas describe": lambda: run([MAIN_PY, "-c", PANDAS, data]),
    }, args.repeats, before={"buildenv init": lambda: target.unlink(missing_ok=True)})
    base = series["pyarrow in memory"].median
    rows = [(name, f"{s.median:.2f}", f"{s.median / base:.2f}x", f"{s.rss_mb:.0f}")
            for name, s in series.items()]
    print(table(["case", "median s", "vs pyarrow", "peak RSS MiB"], rows))
    init = series["buildenv init"]
    print(f"- time vs the in-memory baseline: {init.median / base:.2f}x (goal <= 3x: "
          f"{verdict(init.median <= 3 * base)})")
    print(f"- peak memory: {init.rss_mb:.0f} vs {series['pyarrow in memory'].rss_mb:.0f} MiB "
          f"(goal: below: {verdict(init.rss_mb < series['pyarrow in memory'].rss_mb)})")


if __name__ == "__main__":
    main()
