"""Benchmark `buildenv validate` against pandera, Great Expectations and a bare Parquet decode.

    .venv/bin/python bench/bench_validate.py [--rows 5000000] [--repeats 3]
    .venv/bin/python bench/bench_validate.py --no-peers            # buildenv vs the decode
    .venv/bin/python bench/bench_validate.py --unique-only         # duplicate counting paths

Data: a seeded Parquet file of 5M rows x 21 columns (ints, floats with nulls, strings with
domains, a free-text string, bools, a date, a float column with a float domain), valid
against its declarations, and an environment declaring those columns. One column spec
(COLUMNS below) is rendered three ways, so the rules are the same for every tool:

| rule               | buildenv                  | pandera (pandas backend)        | Great Expectations (pandas)                      |
|--------------------|---------------------------|---------------------------------|--------------------------------------------------|
| dtype              | `dtype:`                  | `Column(dtype)`                 | ExpectColumnValuesToBeOfType                      |
| not null           | `nullable: false`         | `nullable=False`                | ExpectColumnValuesToNotBeNull                     |
| max null fraction  | `max_null_fraction: f`    | `Check(isna().mean() <= f)`     | ExpectColumnProportionOfNonNullValuesToBeBetween  |
| domain             | `domain: [...]`           | `Check.isin([...])`             | ExpectColumnValuesToBeInSet                       |
| range (inclusive)  | `range: [lo, hi]`         | `Check.in_range(lo, hi)`        | ExpectColumnValuesToBeBetween                     |

On top, buildenv checks the vocabulary of issue #12 (EXTRA below; the peers do not): an open
range, `unique: true` on the event id, a `pattern` and a `length` on the free-text title, a
float domain, and `max_violation_fraction` on two columns. `--unique-only` times the duplicate
counter alone on 5M keys (sequential, shuffled in memory, shuffled spilled, strings spilled)
against counting the whole column in memory, with peak RSS.

Each tool runs in its own child process (peak RSS per tool from os.wait4), alternating
round by round, page cache warm:
- buildenv: `buildenv validate bench` (CLI), and `validate_env` timed inside the process;
- pandera 0.x: `pd.read_parquet` + `schema.validate(df, lazy=True)` (peer venv);
- Great Expectations 1.x: `pd.read_parquet` + ephemeral context, pandas datasource,
  whole-dataframe batch, `batch.validate(suite, result_format="BASIC")` (peer venv);
- floor: pyarrow `ParquetFile.iter_batches` over all columns (same pyarrow as buildenv),
  and the same with buildenv's read options (domain strings read as dictionaries).
Each child prints the seconds of its work after its imports ("work s"), so both the
end-to-end time and the work alone are compared.
Goals: >= 3x pandera, >= 10x GE, within 1.25x of the bare decode (with every constraint of
EXTRA), memory bounded by the batch size (RSS on a 4x smaller file should be about the same).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BUILDENV,
    MAIN_PY,
    PEER_PY,
    Run,
    alternate,
    ensure_peer_venv,
    machine,
    peer_version,
    run,
    table,
    verdict,
    work_dir,
)

SEED = 20260917
ROW_GROUP = 1 << 20
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "CA", "ES", "MX", "JP", "IT", "NL", "AU", "SE"]
PLANS = ["basic", "standard", "premium"]
DEVICES = ["tv", "mobile", "web", "tablet"]
GENRES = ["drama", "comedy", "action", "thriller", "documentary", "horror", "romance", "sci-fi",
          "animation", "family", "fantasy", "mystery", "war", "western", "musical"]

# name: (dtype, nullable, max_null_fraction, domain, range)
COLUMNS: dict[str, tuple] = {
    "event_id": ("int64", False, None, None, None),
    "user_id": ("int64", False, None, None, [1, 10_000_000]),
    "age": ("int16", False, None, None, [16, 100]),
    "views": ("int32", False, None, None, [0, 100_000]),
    "release_year": ("int16", False, None, None, [1920, 2026]),
    "rating": ("int8", True, 0.05, None, [1, 5]),
    "price": ("float64", True, 0.02, None, [0, 1000]),
    "score": ("float64", True, 0.10, None, [0, 100]),
    "ratio": ("float32", False, None, None, [0, 1]),
    "latency_ms": ("float64", False, None, None, [0, None]),
    "lat": ("float64", False, None, None, [-90, 90]),
    "lon": ("float64", False, None, None, [-180, 180]),
    "country": ("string", False, None, COUNTRIES, None),
    "plan": ("string", False, None, PLANS, None),
    "device": ("string", True, 0.01, DEVICES, None),
    "genre": ("string", False, None, GENRES, None),
    "title": ("string", False, None, None, None),
    "liked": ("bool", False, None, None, None),
    "promo": ("bool", True, 0.05, None, None),
    "signup_date": ("date", False, None, None, ["2018-01-01", "2026-12-31"]),
    "stars": ("float64", False, None, [0.5 * i for i in range(1, 11)], None),
}
# the issue #12 vocabulary, buildenv only: name -> extra column keys
EXTRA: dict[str, dict] = {
    "event_id": {"unique": True},
    "title": {"pattern": "^title [0-9]{5}$", "length": [11, 11]},
    "score": {"max_violation_fraction": 0.001},
    "device": {"max_violation_fraction": 0.001},
}


def make_data(path: Path, rows: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    types = {"int64": pa.int64(), "int16": pa.int16(), "int32": pa.int32(), "int8": pa.int8(),
             "float64": pa.float64(), "float32": pa.float32(), "string": pa.string(),
             "bool": pa.bool_(), "date": pa.date32()}
    schema = pa.schema([(n, types[c[0]]) for n, c in COLUMNS.items()])
    titles = np.array([f"title {i:05d}" for i in range(20_000)], dtype=object)
    base = np.datetime64("2018-01-01")
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        done = 0
        while done < rows:
            n = min(ROW_GROUP, rows - done)

            def nulls(arr, fraction, kind=None, n=n):
                mask = rng.random(n) < fraction * 0.5  # half the allowed fraction
                return pa.array(arr, mask=mask, type=kind)

            cols = {
                "event_id": np.arange(done, done + n, dtype=np.int64),
                "user_id": rng.integers(1, 10_000_001, n, dtype=np.int64),
                "age": rng.integers(16, 101, n, dtype=np.int16),
                "views": rng.integers(0, 100_001, n, dtype=np.int32),
                "release_year": rng.integers(1920, 2027, n, dtype=np.int16),
                "rating": nulls(rng.integers(1, 6, n, dtype=np.int8), 0.05),
                "price": nulls(np.round(rng.gamma(2.0, 20.0, n).clip(0, 1000), 2), 0.02),
                "score": nulls(rng.uniform(0, 100, n), 0.10),
                "ratio": rng.random(n, dtype=np.float32),
                "latency_ms": rng.lognormal(3, 1, n),
                "lat": rng.uniform(-90, 90, n),
                "lon": rng.uniform(-180, 180, n),
                "country": np.array(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), n)],
                "plan": np.array(PLANS, dtype=object)[rng.integers(0, len(PLANS), n)],
                "device": nulls(np.array(DEVICES, dtype=object)[rng.integers(0, 4, n)], 0.01,
                                pa.string()),
                "genre": np.array(GENRES, dtype=object)[rng.integers(0, len(GENRES), n)],
                "title": titles[rng.integers(0, len(titles), n)],
                "liked": rng.random(n) < 0.6,
                "promo": nulls(rng.random(n) < 0.2, 0.05),
                "signup_date": base + rng.integers(0, 3287, n).astype("timedelta64[D]"),
                "stars": rng.integers(1, 11, n) * 0.5,
            }
            writer.write_table(pa.table({k: pa.array(v) if not isinstance(v, pa.Array) else v
                                         for k, v in cols.items()}).cast(schema))
            done += n
    os.replace(tmp, path)


def env_yaml(name: str, uri: str, extra: bool = True) -> str:
    lines = [f"name: {name}", "description: validate benchmark", "datasets:", "  events:",
             f"    uri: {uri}", "    format: parquet", "    columns:"]
    for col, (dtype, nullable, mnf, domain, rng) in COLUMNS.items():
        parts = [f"dtype: {dtype}", f"nullable: {'true' if nullable else 'false'}"]
        if mnf is not None:
            parts.append(f"max_null_fraction: {mnf}")
        if domain is not None and (extra or not dtype.startswith("float")):  # float: #12
            parts.append("domain: [" + ", ".join(json.dumps(v) for v in domain) + "]")
        if rng is not None:
            parts.append("range: [" + ", ".join(json.dumps(v) for v in rng) + "]")
        if extra:
            parts += [f"{key}: {json.dumps(value)}" for key, value in EXTRA.get(col, {}).items()]
        elif rng is not None and None in rng:
            parts.pop()  # the open range is #12 vocabulary too
        lines.append(f"      {col}: {{{', '.join(parts)}}}")
    return "\n".join(lines) + "\n"


BUILDENV_INPROC = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.data.validate.validate import validate_env
import pyarrow.parquet
project = Project.discover(sys.argv[1])
res = Multiverse(project).resolve(sys.argv[2])
t1 = time.perf_counter()
problems = validate_env(res, project)
t2 = time.perf_counter()
assert not problems, [p.to_text() for p in problems]
print(f"WORK {t2 - t1:.4f} IMPORT {t1 - t0:.4f}")
"""

BARE_DECODE = """
import sys, time
t0 = time.perf_counter()
import pyarrow.parquet as pq
t1 = time.perf_counter()
dictionary = sys.argv[3].split(",") if len(sys.argv) > 3 else None
pf = pq.ParquetFile(sys.argv[1], read_dictionary=dictionary)
rows = 0
for batch in pf.iter_batches(batch_size=int(sys.argv[2]), columns=pf.schema_arrow.names,
                             use_threads=True):
    rows += batch.num_rows
t2 = time.perf_counter()
print(f"WORK {t2 - t1:.4f} IMPORT {t1 - t0:.4f} ROWS {rows}")
"""

PANDERA = r"""
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
import pandera.pandas as pa
t1 = time.perf_counter()
spec = json.loads(sys.argv[2])
DTYPES = {"int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
          "float64": "float64", "float32": "float32", "string": pa.String,
          "bool": "bool", "date": pa.Date}
columns = {}
for name, (dtype, nullable, mnf, domain, rng) in spec.items():
    checks = []
    if domain is not None:
        checks.append(pa.Check.isin(domain))
    if rng is not None:
        lo, hi = rng
        if dtype == "date":
            import datetime as dt
            lo, hi = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
        checks.append(pa.Check.in_range(lo, hi) if lo is not None and hi is not None
                      else pa.Check.ge(lo) if lo is not None else pa.Check.le(hi))
    if mnf is not None:
        checks.append(pa.Check(lambda s, f=mnf: s.isna().mean() <= f, ignore_na=False,
                               name="max_null_fraction"))
    kind = DTYPES[dtype]
    if dtype in ("int8", "bool") and nullable:
        kind = None  # nulls make pandas use float64 / object: checked by the rules, not dtype
    columns[name] = pa.Column(kind, nullable=nullable, checks=checks)
schema = pa.DataFrameSchema(columns, strict=False)
t2 = time.perf_counter()
df = pd.read_parquet(sys.argv[1])
t3 = time.perf_counter()
schema.validate(df, lazy=True)
t4 = time.perf_counter()
print(f"WORK {t4 - t2:.4f} IMPORT {t1 - t0:.4f} READ {t3 - t2:.4f} CHECK {t4 - t3:.4f}")
"""

GE = r"""
import json, sys, time, warnings, logging
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
t0 = time.perf_counter()
import pandas as pd
import great_expectations as gx
import great_expectations.expectations as gxe
t1 = time.perf_counter()
spec = json.loads(sys.argv[2])
context = gx.get_context(mode="ephemeral")
asset = context.data_sources.add_pandas("bench").add_dataframe_asset("events")
batch_def = asset.add_batch_definition_whole_dataframe("all")
suite = context.suites.add(gx.ExpectationSuite(name="events"))
TYPES = {"int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
         "float64": "float64", "float32": "float32", "string": "str", "bool": "bool",
         "date": "date"}
for name, (dtype, nullable, mnf, domain, rng) in spec.items():
    if not (dtype in ("int8", "bool") and nullable):
        suite.add_expectation(gxe.ExpectColumnValuesToBeOfType(column=name, type_=TYPES[dtype]))
    if not nullable:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
    if mnf is not None:
        suite.add_expectation(gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(
            column=name, min_value=1 - mnf))
    if domain is not None:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=domain))
    if rng is not None:
        lo, hi = rng
        if dtype == "date":
            import datetime as dt
            lo, hi = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo,
                                                                max_value=hi))
t2 = time.perf_counter()
df = pd.read_parquet(sys.argv[1])
t3 = time.perf_counter()
batch = batch_def.get_batch(batch_parameters={"dataframe": df})
result = batch.validate(suite, result_format="BASIC")
t4 = time.perf_counter()
failed = [r.expectation_config.type + ":" + str(r.expectation_config.kwargs.get("column"))
          for r in result.results if not r.success]
if failed:
    print("FAILED", failed, file=sys.stderr)
    sys.exit(3)
print(f"WORK {t4 - t2:.4f} IMPORT {t1 - t0:.4f} READ {t3 - t2:.4f} CHECK {t4 - t3:.4f} "
      f"N {len(result.results)}")
"""


DICT_CASE = "bare decode, checked strings as dictionary"
BEFORE_CASE = "validate_env without the #12 constraints"

UNIQUE = r"""
import resource, sys, time
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from buildenv.data.validate.uniqueness import DuplicateCounter
kind, rows, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BATCH = 262_144
def keys(start, n):
    i = np.arange(start, start + n, dtype=np.uint64)
    if kind == "sequential":  # an id column: increasing, no duplicates
        return pa.array(i.astype(np.int64))
    i[i % np.uint64(5000) == np.uint64(1)] -= np.uint64(1)  # 1 duplicated key in 5000
    with np.errstate(over="ignore"):  # a bijection of the index: shuffled, distinct keys
        mixed = (i * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(24)
    if kind == "strings":
        return pa.array(np.char.add("user-", mixed.astype(str)).astype(object))
    return pa.array(mixed.astype(np.int64))
work = 0.0
if budget:
    counter = DuplicateCounter(budget=budget)
    for start in range(0, rows, BATCH):
        arr = keys(start, min(BATCH, rows - start))
        t = time.perf_counter(); counter.add(arr); work += time.perf_counter() - t
    t = time.perf_counter(); found = counter.finish(); work += time.perf_counter() - t
    values, dup_rows, spilled = found.values, found.rows, found.spilled
else:  # the reference: the whole column in memory, counted at once
    column = pa.chunked_array([keys(s, min(BATCH, rows - s)) for s in range(0, rows, BATCH)])
    t = time.perf_counter()
    if kind == "strings":
        vc = pc.value_counts(column.combine_chunks())
        counts = vc.field("counts").to_numpy()
    else:
        _, counts = np.unique(column.to_numpy(), return_counts=True)
    work = time.perf_counter() - t
    values, dup_rows, spilled = int((counts > 1).sum()), int(counts[counts > 1].sum()), False
print(f"WORK {work:.4f} VALUES {values} ROWS {dup_rows} SPILLED {int(spilled)}")
"""


def unique_section(rows: int, repeats: int) -> None:
    """The duplicate counter alone: its paths against counting the whole column in memory."""
    from buildenv.data.validate.uniqueness import BUDGET

    cases = {
        "sequential int64 keys, none repeated (like event_id)": ("sequential", BUDGET),
        "shuffled int64 keys, in memory (one sort)": ("shuffled", BUDGET),
        "shuffled int64 keys, 8 MiB budget (spilled)": ("shuffled", 8 << 20),
        "shuffled int64, reference: np.unique of the whole column": ("shuffled", 0),
        "string keys, 64 MiB budget (spilled)": ("strings", BUDGET),
        "string keys, reference: value_counts of the whole column": ("strings", 0),
    }
    series = alternate({name: (lambda k=kind, b=budget: run(
        [MAIN_PY, "-c", UNIQUE, k, str(rows), str(b)])) for name, (kind, budget)
        in cases.items()}, repeats, warmup=False)
    rows_out = []
    for name, s in series.items():
        parts = [dict(zip(r.stdout.split()[::2], r.stdout.split()[1::2])) for r in s.runs]
        work = sorted(float(p["WORK"]) for p in parts)[len(parts) // 2]
        rows_out.append([name, f"{work:.2f}", f"{s.rss_mb:.0f}", parts[0]["VALUES"],
                         parts[0]["ROWS"], "yes" if parts[0]["SPILLED"] == "1" else "no"])
    print(f"\n## unique: exact duplicate counts of {rows:,} keys (shuffled and string keys: "
          "1 in 5000 duplicated)\n")
    print(table(["case", "work s", "peak RSS MiB", "dup values", "dup rows", "spilled"],
                rows_out))


def parse(r: Run) -> dict[str, float]:
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("WORK ")][-1].split()
    return {line[i]: float(line[i + 1]) for i in range(0, len(line) - 1, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-peers", action="store_true", help="buildenv vs bare decode only")
    ap.add_argument("--skip", action="append", default=[], choices=["pandera", "ge"])
    ap.add_argument("--unique-only", action="store_true",
                    help="only the duplicate-counting section")
    args = ap.parse_args()
    if args.unique_only:
        print(f"# bench_validate --unique-only ({machine()})", flush=True)
        unique_section(args.rows, args.repeats)
        return 0
    peers = [] if args.no_peers else [p for p in ("pandera", "ge") if p not in args.skip]
    if peers:
        ensure_peer_venv(["pandas", "pyarrow"] + [{"pandera": "pandera",
                                                   "ge": "great_expectations"}[p]
                                                  for p in peers])
    root = work_dir("validate") / "repo"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    sizes = {"bench": args.rows, "bench-small": args.rows // 4}
    files = {}
    for name, rows in sizes.items():
        data = root / "data" / f"{name}.parquet"
        stamp = data.with_suffix(".seed")
        want = f"{SEED}:{rows}:{json.dumps(COLUMNS, sort_keys=True)}"
        if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
            print(f"generating {data} ({rows} rows, seed {SEED})", flush=True)
            make_data(data, rows, SEED)
            stamp.write_text(want)
        (root / "environments" / f"{name}.yaml").write_text(env_yaml(name, f"data/{name}.parquet"))
        files[name] = data
    (root / "environments" / "bench-before.yaml").write_text(
        env_yaml("bench-before", "data/bench.parquet", extra=False))
    data = files["bench"]
    spec = json.dumps(COLUMNS)
    from buildenv.data.gate.formats import BATCH_ROWS

    print(f"# bench_validate ({machine()})\n\n{args.rows} rows x {len(COLUMNS)} columns, "
          f"{data.stat().st_size / 2**20:.0f} MiB Parquet; batch {BATCH_ROWS} rows", flush=True)
    cases = {
        "buildenv validate (CLI)": lambda: run([BUILDENV, "validate", "bench"], cwd=root),
        "buildenv validate_env (in-process)": lambda: run(
            [MAIN_PY, "-c", BUILDENV_INPROC, root, "bench"]),
        BEFORE_CASE: lambda: run([MAIN_PY, "-c", BUILDENV_INPROC, root, "bench-before"]),
        "bare decode (iter_batches, all columns)": lambda: run(
            [MAIN_PY, "-c", BARE_DECODE, data, str(BATCH_ROWS)]),
        DICT_CASE: lambda: run(
            [MAIN_PY, "-c", BARE_DECODE, data, str(BATCH_ROWS), ",".join(
                n for n, c in COLUMNS.items() if c[0] == "string" and (
                    c[3] is not None or "pattern" in EXTRA.get(n, {})
                    or "length" in EXTRA.get(n, {})))]),
    }
    if "pandera" in peers:
        cases["pandera (pandas)"] = lambda: run([PEER_PY, "-c", PANDERA, data, spec])
    if "ge" in peers:
        cases["Great Expectations (pandas)"] = lambda: run([PEER_PY, "-c", GE, data, spec])
    series = alternate(cases, args.repeats)

    works = {name: sorted(parse(r)["WORK"] for r in s.runs) for name, s in series.items()
             if name != "buildenv validate (CLI)"}
    work_med = {name: xs[len(xs) // 2] for name, xs in works.items()}
    ours_e2e = series["buildenv validate (CLI)"].median
    ours_work = work_med["buildenv validate_env (in-process)"]
    ours_cpu = series["buildenv validate (CLI)"].cpu
    rows = []
    for name, s in series.items():
        w = work_med.get(name)
        rows.append([name, f"{s.median:.2f}", f"{s.median / ours_e2e:.2f}x",
                     f"{w:.2f}" if w is not None else "-",
                     f"{w / ours_work:.2f}x" if w is not None else "-", f"{s.cpu:.2f}",
                     f"{s.cpu / ours_cpu:.2f}x", f"{s.rss_mb:.0f}"])
    print()
    print("Times are medians; \"x\" columns are that tool's time / buildenv's (CLI for "
          "end-to-end and CPU, validate_env for work): how many times faster buildenv is.\n")
    print(table(["tool", "end-to-end s", "x (wall)", "work s", "x (work)", "CPU s", "x (CPU)",
                 "peak RSS MiB"], rows))
    for name in ("pandera (pandas)", "Great Expectations (pandas)"):
        if name in series:
            parts = [parse(r) for r in series[name].runs]
            mid = sorted(parts, key=lambda p: p["WORK"])[len(parts) // 2]
            print(f"\n{name}: read_parquet {mid['READ']:.2f} s + checks {mid['CHECK']:.2f} s "
                  f"(imports {mid['IMPORT']:.2f} s)")
    goals = {}
    floor = work_med["bare decode (iter_batches, all columns)"]
    r = ours_work / floor
    goals["within 1.25x of bare decode (work)"] = r <= 1.25
    tight = work_med[DICT_CASE]
    before = work_med[BEFORE_CASE]
    lines = [f"- validate_env / bare decode (work): **{r:.2f}x** (goal <= 1.25x: "
             f"{verdict(r <= 1.25)}); the #12 constraints (unique, pattern, length, open "
             f"range, float domain, tolerances) add {ours_work - before:+.2f} s "
             f"({ours_work / before:.2f}x of validate_env without them); vs the same decode "
             f"with buildenv's read options (checked strings as dictionary): "
             f"{ours_work / tight:.2f}x; end-to-end CLI / bare decode "
             f"process: {ours_e2e / series['bare decode (iter_batches, all columns)'].median:.2f}x"
             f" (CPU {ours_cpu / series['bare decode (iter_batches, all columns)'].cpu:.2f}x)"]
    for name, goal in (("pandera (pandas)", 3), ("Great Expectations (pandas)", 10)):
        if name in series:
            e2e = series[name].median / ours_e2e
            work = work_med[name] / ours_work
            goals[f">= {goal}x {name}"] = e2e >= goal
            lines.append(f"- {name} / buildenv: end-to-end **{e2e:.1f}x**, work only "
                         f"{work:.1f}x, CPU {series[name].cpu / ours_cpu:.1f}x (goal >= {goal}x "
                         f"end-to-end: {verdict(e2e >= goal)})")

    # memory: the same CLI on a 4x smaller file
    small = [run([BUILDENV, "validate", "bench-small"], cwd=root).maxrss_kb / 1024
             for _ in range(2)]
    big = series["buildenv validate (CLI)"].rss_mb
    table_mb = _table_mb(data)
    ok = big - max(small) < 64
    goals["memory bounded by batch (RSS ~ same at 1/4 rows)"] = ok
    lines.append(f"- peak RSS: {big:.0f} MiB on {args.rows} rows vs {max(small):.0f} MiB on "
                 f"{args.rows // 4} rows (the decoded table is {table_mb:.0f} MiB); "
                 f"bounded: {verdict(ok)}")
    print("\n" + "\n".join(lines))
    versions = [f"pyarrow (buildenv) {_version(MAIN_PY, 'pyarrow')}"]
    if peers:
        versions += [f"pandas {peer_version('pandas')}"] + (
            [f"pandera {peer_version('pandera')}"] if "pandera" in peers else []) + (
            [f"great_expectations {peer_version('great_expectations')}"] if "ge" in peers
            else [])
    print("\nversions: " + ", ".join(versions))
    print("\n## Goals\n" + "\n".join(f"- {k}: {verdict(v)}" for k, v in goals.items()))
    return 0


def _table_mb(path: Path) -> float:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    return sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)) / 2**20


def _version(py: Path, module: str) -> str:
    return run([py, "-c", f"import importlib.metadata as m; print(m.version({module!r}))"]
               ).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
