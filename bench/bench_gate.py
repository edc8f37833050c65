"""Verified reads vs unverified reads: what the data gate's hashing costs.

    .venv/bin/python bench/bench_gate.py [--rows 6000000] [--repeats 5] [--algorithm blake3]

A read through the gate (`Gate.open(...).table(...)`: the file pinned by its open descriptor,
hashed in a second thread while it is decoded, the digest compared with the lock's; or, when
the lock's stat cache vouches for exactly the open file, not hashed again) against

- the same decode without verification: the gate's own reader (`FORMATS[fmt].batches`) on
  the plain file, so the difference is exactly what verifying costs;
- the read a user would write: `pyarrow.parquet.read_table` for Parquet, `pyarrow.csv.read_csv`
  with the declared column types for CSV.

Each runs in its own child process, alternating round by round; the figures are the read alone
(imports and interpreter start excluded, page cache warm): wall seconds and the process's CPU
seconds (steadier on a shared machine). Goal: verified within 5% of the unverified decode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time

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
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Multiverse
project = Project.discover(root)
res = Multiverse(project).resolve("bench-" + fmt)
columns = list(res.env.datasets["events"].columns)
path = root + "/data/events." + fmt
types = {"id": pa.int64(), "user": pa.int64(), "amount": pa.float64(), "score": pa.float64(),
         "country": pa.string(), "device": pa.string(), "flag": pa.bool_(),
         "at": pa.timestamp("us", tz="UTC")}
class Plain:  # the file as the formats' Bytes, without pinning or hashing
    def open(self):
        return pa.OSFile(path)
start, cpu = time.perf_counter(), time.process_time()
if mode in ("gate", "vouched"):
    if mode == "gate":  # no stat cache entry: every byte is hashed while it is decoded
        Gate.vouched = lambda self, pinned, fmt: None
    with Gate(project, res.env, "bench", pins={"events": digest}).open("events") as read:
        assert (read._pinned._digest is not None) == (mode == "vouched")  # vouched up front
        rows = read.table(columns).num_rows
elif mode == "decode":
    from buildenv.data.gate.formats import FORMATS, declared_types
    declared = res.env.datasets["events"].columns
    batches = [declared_types(b, declared) for b in
               FORMATS[fmt].batches(Plain(), declared, columns)]
    rows = pa.Table.from_batches(batches).num_rows
elif fmt == "parquet":
    rows = pq.read_table(path, columns=columns).num_rows
else:
    rows = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types)).num_rows
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "rows": rows}))
"""


def _hexdigest(algorithm: str, path) -> str:
    if algorithm == "blake3":
        import blake3

        return blake3.blake3(path.read_bytes()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithm", choices=("sha256", "blake3"), default="sha256",
                        help="the lock's digest (`buildenv lock --algorithm`)")
    args = parser.parse_args()
    root = work_dir("gate")
    data = root / "data"
    data.mkdir(exist_ok=True)
    if not (data / "events.parquet").exists() or json.loads(
            (root / "rows.json").read_text() if (root / "rows.json").exists() else "0") != args.rows:
        print(f"generating {args.rows:,} rows", flush=True)
        run([MAIN_PY, "-c", GENERATE, str(args.rows), str(data)])
        past = time.time() - 120  # outside the stat cache's racy window, or nothing is vouched
        for fmt in ("parquet", "csv"):
            os.utime(data / f"events.{fmt}", (past, past))
        (root / "rows.json").write_text(json.dumps(args.rows))
    (root / "environments").mkdir(exist_ok=True)
    for fmt in ("parquet", "csv"):
        (root / "environments" / f"bench-{fmt}.yaml").write_text(
            ENV.format(fmt=fmt).replace("name: bench", f"name: bench-{fmt}"))
    digests = {fmt: f"{args.algorithm}:" + _hexdigest(args.algorithm, data / f"events.{fmt}")
               for fmt in ("parquet", "csv")}
    # `buildenv lock` leaves the stat cache that vouches for the files (they were written
    # long enough ago to be outside its racy window)
    run([MAIN_PY, "-m", "buildenv", "lock", "--algorithm", args.algorithm, "--root", str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO)})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(machine(), flush=True)
    rows_out = []
    ratios = {}
    for fmt in ("parquet", "csv"):
        size = (data / f"events.{fmt}").stat().st_size / 2**20
        measured: dict[str, list[dict]] = {"user": [], "decode": [], "gate": [], "vouched": []}

        def case(mode: str, fmt: str = fmt, measured: dict = measured):
            def go():
                result = run([MAIN_PY, "-c", MEASURE, fmt, mode, str(root), digests[fmt]],
                             env=env)
                measured[mode].append(json.loads(result.stdout))
                return result
            return go

        alternate({"pyarrow one-liner": case("user"), "same decode, unverified": case("decode"),
                   "verified (gate)": case("gate"), "verified, vouched": case("vouched")},
                  args.repeats)

        def med(mode: str, key: str, measured: dict = measured) -> float:
            return statistics.median(m[key] for m in measured[mode][1:])  # [0]: warm-up

        ratios[fmt] = (med("gate", "seconds") / med("decode", "seconds"),
                       med("gate", "cpu") / med("decode", "cpu"),
                       med("vouched", "seconds") / med("decode", "seconds"))
        for mode, label in (("user", "pyarrow one-liner"), ("decode", "same decode, unverified"),
                            ("gate", "verified (gate), hashed while decoded"),
                            ("vouched", "verified (gate), vouched by the lock's stat cache")):
            rows_out.append([fmt, f"{size:.0f}", label, f"{med(mode, 'seconds'):.3f}",
                             f"{med(mode, 'cpu'):.3f}",
                             f"{med(mode, 'seconds') / med('decode', 'seconds'):.3f}x",
                             f"{med(mode, 'cpu') / med('decode', 'cpu'):.3f}x"])
    print()
    print(table(["format", "MiB", "read", "wall s", "CPU s", "wall vs unverified",
                 "CPU vs unverified"], rows_out))
    for fmt, (wall, cpu, vouched) in ratios.items():
        print(f"- {fmt}: verified / unverified decode, hashed while decoded: wall **{wall:.3f}x**"
              f", CPU {cpu:.3f}x (goal <= {GOAL}x: {verdict(wall <= GOAL)}); vouched by the "
              f"stat cache: wall **{vouched:.3f}x** ({verdict(vouched <= GOAL)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
