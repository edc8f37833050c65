"""Verified reads vs unverified reads: what the data gate's hashing costs.

    .venv/bin/python bench/bench_gate.py [--rows 6000000] [--repeats 5]

A read through the gate (`Gate.open(...).table(...)`: the file pinned by its open descriptor,
hashed in a second thread while it is decoded, the digest compared with the lock's) against the
same decode without any verification, as a user would write it: `pyarrow.parquet.read_table`
for Parquet, `pyarrow.csv.read_csv` with the declared column types for CSV. Both run in their
own child process, alternating round by round; the time measured is the read alone (imports and
interpreter start excluded, the page cache warm). Goal: the verified read within 5% of the
unverified one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys

from _common import MAIN_PY, REPO, alternate, machine, run, table, verdict, work_dir

GOAL = 1.05

ENV = """\
name: bench
datasets:
  events:
    uri: data/events.{fmt}
    format: {fmt}
    columns:
      id: {{dtype: int64, nullable: false}}
      user: {{dtype: int64}}
      amount: {{dtype: float64}}
      score: {{dtype: float64}}
      country: {{dtype: string}}
      device: {{dtype: string}}
      flag: {{dtype: bool}}
      at: {{dtype: timestamp}}
"""

GENERATE = """
import numpy as np, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq, sys
rows, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(7)
t = pa.table({
    "id": pa.array(np.arange(rows), pa.int64()),
    "user": pa.array(rng.integers(0, 500_000, rows), pa.int64()),
    "amount": pa.array(rng.gamma(2.0, 30.0, rows).round(2)),
    "score": pa.array(rng.normal(0, 1, rows)),
    "country": pa.array(rng.choice(["US", "GB", "DE", "FR", "BR", "IN", "JP"], rows)),
    "device": pa.array(rng.choice(["tv", "mobile", "web", "tablet"], rows)),
    "flag": pa.array(rng.random(rows) < 0.3),
    "at": pa.array((1_767_225_600_000_000 + rng.integers(0, 10**13, rows)).astype("int64"),
                   pa.timestamp("us", tz="UTC")),
})
pq.write_table(t, out + "/events.parquet")
pacsv.write_csv(t, out + "/events.csv")
"""

MEASURE = """
import json, sys, time
fmt, mode, root, digest = sys.argv[1:5]
import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
from buildenv.core.project import Project
from buildenv.data.gate import Gate
from buildenv.env.resolve import Multiverse
project = Project.discover(root)
res = Multiverse(project).resolve("bench-" + fmt)
columns = list(res.env.datasets["events"].columns)
path = root + "/data/events." + fmt
types = {"id": pa.int64(), "user": pa.int64(), "amount": pa.float64(), "score": pa.float64(),
         "country": pa.string(), "device": pa.string(), "flag": pa.bool_(),
         "at": pa.timestamp("us", tz="UTC")}
start = time.perf_counter()
if mode == "gate":
    with Gate(project, res.env, "bench", pins={"events": digest}).open("events") as read:
        rows = read.table(columns).num_rows
elif fmt == "parquet":
    rows = pq.read_table(path, columns=columns).num_rows
else:
    rows = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types)).num_rows
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = work_dir("gate")
    data = root / "data"
    data.mkdir(exist_ok=True)
    if not (data / "events.parquet").exists() or json.loads(
            (root / "rows.json").read_text() if (root / "rows.json").exists() else "0") != args.rows:
        print(f"generating {args.rows:,} rows", flush=True)
        run([MAIN_PY, "-c", GENERATE, str(args.rows), str(data)])
        (root / "rows.json").write_text(json.dumps(args.rows))
    (root / "environments").mkdir(exist_ok=True)
    for fmt in ("parquet", "csv"):
        (root / "environments" / f"bench-{fmt}.yaml").write_text(
            ENV.format(fmt=fmt).replace("name: bench", f"name: bench-{fmt}"))
    digests = {fmt: "sha256:" + hashlib.sha256((data / f"events.{fmt}").read_bytes()).hexdigest()
               for fmt in ("parquet", "csv")}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(machine(), flush=True)
    rows_out = []
    ratios = {}
    for fmt in ("parquet", "csv"):
        size = (data / f"events.{fmt}").stat().st_size / 2**20
        seconds: dict[str, list[float]] = {"bare": [], "gate": []}

        def case(mode: str, fmt: str = fmt, seconds: dict = seconds):
            def go():
                result = run([MAIN_PY, "-c", MEASURE, fmt, mode, str(root), digests[fmt]],
                             env=env)
                seconds[mode].append(json.loads(result.stdout)["seconds"])
                return result
            return go

        series = alternate({"unverified": case("bare"), "verified (gate)": case("gate")},
                           args.repeats)
        bare = statistics.median(seconds["bare"][1:])
        gate = statistics.median(seconds["gate"][1:])
        ratios[fmt] = gate / bare
        rows_out.append([fmt, f"{size:.0f}", f"{bare:.3f}", f"{gate:.3f}", f"{gate / bare:.3f}x",
                         f"{series['unverified'].rss_mb:.0f}",
                         f"{series['verified (gate)'].rss_mb:.0f}"])
    print()
    print(table(["format", "MiB", "unverified read s", "verified read s", "verified / unverified",
                 "RSS MiB unverified", "RSS MiB verified"], rows_out))
    for fmt, ratio in ratios.items():
        print(f"- {fmt}: verified / unverified **{ratio:.3f}x** (goal <= {GOAL}x: "
              f"{verdict(ratio <= GOAL)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
