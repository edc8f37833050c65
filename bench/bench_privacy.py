"""Private statistics and synthetic data vs the bare OpenDP calls, in the same run.

    python bench/bench_privacy.py stats [--rows 5000000] [--repeats 2]
    python bench/bench_privacy.py synth [--rows 1000000] [--repeats 1]

stats: `buildenv stats ENV --dataset big --epsilon 1` (the CLI, end to end: gate read and
verification, ledger, audit) on a restricted Parquet dataset of 20 declared columns (6 int32 and
6 float64 ranges with 2% nulls, 5 strings with 12-value domains, a date, a timestamp, a bool),
against the bare OpenDP Context API over `pl.scan_parquet` answering the same queries: the row
count, a histogram per column over its public keys or range bins (with nulls), and a bounded
sum per numeric column. Goal: within 2x of bare, <= 1 GiB peak.

synth: `buildenv synth ENV --dataset big --rows N --epsilon 1` (CLI end to end: read,
coding, MST, sampling, decoding, fidelity report, Parquet, derived environment, lock,
validation) on 10 declared columns (4 string domains, 4 int ranges, a float range, a bool)
against the bare OpenDP pipeline: `scan_parquet` -> Context -> `contingency_table(keys=...,
cuts=..., algorithm=MST)` -> `synthesize(N)` -> Parquet, with the epsilon and number of pair
selections buildenv passes (OpenDP 0.16's MST refuses some budgets: see synthesize.mst_budget).
Goal: within 1.2x of bare, <= 2 GiB peak.

Every case runs in its own child process (peak RSS from GNU time), alternating round by round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, alternate, machine, run, table, verdict, work_dir

PY = sys.executable
STRINGS = [f"k{i:02d}" for i in range(12)]
PYPROJECT = '[tool.buildenv]\nenvironments_dir = "environments"\n'


# --- data -----------------------------------------------------------------------------------

def stats_columns() -> dict[str, dict]:
    cols: dict[str, dict] = {}
    for i in range(6):
        cols[f"i{i}"] = {"dtype": "int32", "range": [0, 1000]}
    for i in range(6):
        cols[f"f{i}"] = {"dtype": "float64", "range": [0, 100]}
    for i in range(5):
        cols[f"s{i}"] = {"dtype": "string", "domain": STRINGS}
    cols["d0"] = {"dtype": "date", "range": ["2020-01-01", "2025-12-31"]}
    cols["t0"] = {"dtype": "timestamp", "range": ["2024-01-01T00:00:00Z",
                                                    "2025-12-31T23:59:59Z"]}
    cols["b0"] = {"dtype": "bool"}
    return cols


def synth_columns() -> dict[str, dict]:
    cols: dict[str, dict] = {}
    for i in range(4):
        cols[f"s{i}"] = {"dtype": "string", "nullable": False, "domain": STRINGS[: 5 + 2 * i]}
    for i in range(4):
        cols[f"i{i}"] = {"dtype": "int32", "nullable": False, "range": [0, 1000]}
    cols["f0"] = {"dtype": "float64", "range": [0, 100]}
    cols["b0"] = {"dtype": "bool", "nullable": False}
    return cols


def write_data(path: Path, columns: dict[str, dict], rows: int, seed: int = 5) -> None:
    """Seeded, correlated columns, written in 500k-row row groups (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    done = 0
    while done < rows:
        n = min(500_000, rows - done)
        base = rng.random(n)  # a latent variable most columns depend on
        arrays = {}
        for name, spec in columns.items():
            noise = rng.random(n)
            mix = 0.6 * base + 0.4 * noise
            if spec["dtype"] == "int32":
                arrays[name] = pa.array((mix * 1000).astype(np.int32))
            elif spec["dtype"] == "float64":
                arrays[name] = pa.array(mix * 100, mask=rng.random(n) < 0.02)
            elif spec["dtype"] == "string":
                keys = np.asarray(spec["domain"])
                arrays[name] = pa.array(keys[(mix * len(keys)).astype(int)]).dictionary_encode()
            elif spec["dtype"] == "date":
                arrays[name] = pa.array((18262 + mix * 2190).astype(np.int32)).cast(pa.date32())
            elif spec["dtype"] == "timestamp":
                start = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6)
                arrays[name] = pa.array((start + mix * 6.3e13).astype(np.int64)).cast(
                    pa.timestamp("us", tz="UTC"))
            else:
                arrays[name] = pa.array(mix > 0.5)
        batch = pa.table(arrays)
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema)
        writer.write_table(batch)
        done += n
    assert writer is not None
    writer.close()


def prepare(kind: str, rows: int) -> Path:
    import yaml

    root = work_dir(f"privacy-{kind}-{rows}")
    data = root / "data" / "big.parquet"
    columns = stats_columns() if kind == "stats" else synth_columns()
    env = {"name": "big", "datasets": {"big": {"uri": "data/big.parquet", "columns": columns}},
           "privacy": {"restricted": ["big"], "epsilon_budget": 1e9}}
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments" / "big.yaml").write_text(yaml.safe_dump(env, sort_keys=False))
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {data} ({rows:,} rows x {len(columns)} columns)", flush=True)
        write_data(data, columns, rows)
    run([PY, "-m", "buildenv", "lock", "big"], cwd=root, env=_env(root))
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "BUILDENV_ROOT": str(root)}


# --- bare OpenDP (children) -------------------------------------------------------------------

def bare_stats(path: str) -> None:
    """The same figures as `buildenv stats` through OpenDP's Context API on a Parquet scan."""
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np
    import opendp.prelude as dp
    import polars as pl

    dp.enable_features("contrib")
    started = time.perf_counter()
    columns = stats_columns()
    lf = pl.scan_parquet(path).with_columns(  # dictionary pages read as Categorical
        [pl.col(n).cast(pl.String) for n, c in columns.items() if c["dtype"] == "string"])
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()  # a public bound, as margin
    numeric = {n: c for n, c in columns.items() if "range" in c}
    queries = 1 + len(columns) + 1
    ctx = dp.Context.compositor(
        data=lf, privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=queries,
        margins=[dp.polars.Margin(by=[], max_length=2 * rows)])

    def as_number(name: str, spec: dict):
        expr = pl.col(name)
        if spec["dtype"] == "date":
            return expr.cast(pl.Int32).cast(pl.Float64), 18262.0, 20454.0
        if spec["dtype"] == "timestamp":
            lo = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6
            return expr.cast(pl.Int64).cast(pl.Float64), lo, lo + 6.3e13
        lo, hi = spec["range"]
        return expr.cast(pl.Float64), float(lo), float(hi)

    out = [ctx.query().select(dp.len(signed=True)).release().collect()]
    sums = []
    for name, spec in columns.items():
        if name in numeric:
            expr, lo, hi = as_number(name, spec)
            breaks = list(np.linspace(lo, hi, 21)[1:-1])
            labels = [str(i) for i in range(20)]
            keys = pl.LazyFrame({name: pl.Series(labels + [None], dtype=pl.Categorical)})
            query = ctx.query().with_columns(
                expr.clip(lo, hi).cut(breaks, labels=labels).alias(name))
            sums.append(expr.fill_null(lo).clip(lo, hi).dp.sum((lo, hi)).alias(name))
        else:
            domain = spec.get("domain", [False, True])
            keys = pl.LazyFrame({name: domain + [None]})
            query = ctx.query()
        out.append(query.group_by(name).agg(dp.len(signed=True)).with_keys(keys)
                   .release().collect())
    out.append(ctx.query().select(*sums).release().collect())
    print(json.dumps({"work_seconds": time.perf_counter() - started,
                      "releases": len(out)}))


def bare_synth(path: str, rows: str, out: str) -> None:
    """OpenDP's MST pipeline as its docs show it, over the same declared keys and bins."""
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np
    import opendp.prelude as dp
    import polars as pl

    sys.path.insert(0, str(REPO))
    from buildenv.access.synthesize import mst_budget

    dp.enable_features("contrib")
    started = time.perf_counter()
    columns = synth_columns()
    keys = {n: c["domain"] for n, c in columns.items() if "domain" in c}
    keys.update({n: [False, True] for n, c in columns.items() if c["dtype"] == "bool"})
    cuts = {n: [float(x) for x in np.linspace(c["range"][0], c["range"][1], 17)[1:-1]]
            for n, c in columns.items() if "range" in c}
    epsilon, selections = mst_budget(dp, 1.0, len(columns))
    lf = pl.scan_parquet(path).with_columns(
        [pl.col(n).cast(pl.Float64) for n in cuts] + [pl.col(n).cast(pl.String) for n in keys
                                                      if columns[n]["dtype"] == "string"])
    ctx = dp.Context.compositor(data=lf, privacy_unit=dp.unit_of(contributions=1),
                                privacy_loss=dp.loss_of(epsilon=epsilon))
    table_ = ctx.query(epsilon=epsilon).contingency_table(
        keys=keys, cuts=cuts, algorithm=dp.mbi.MST(num_selections=selections)).release()
    np.random.seed(0)
    frame = table_.synthesize(rows=int(rows), method="sample")
    frame.write_parquet(out)
    print(json.dumps({"work_seconds": time.perf_counter() - started, "rows": frame.height}))


# --- driver ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["stats", "synth", "_bare_stats", "_bare_synth"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--repeats", type=int, default=None)
    opts = parser.parse_args()
    if opts.kind == "_bare_stats":
        return bare_stats(*opts.args)
    if opts.kind == "_bare_synth":
        return bare_synth(*opts.args)
    rows = opts.rows or (5_000_000 if opts.kind == "stats" else 1_000_000)
    repeats = opts.repeats or (2 if opts.kind == "stats" else 1)
    print(f"machine: {machine()}", flush=True)
    root = prepare(opts.kind, rows)
    data = root / "data" / "big.parquet"
    env = _env(root)
    if opts.kind == "stats":
        cases = {
            "buildenv stats (CLI)": lambda: run(
                [PY, "-m", "buildenv", "stats", "big", "--dataset", "big", "--epsilon", "1",
                 "--format", "json"], cwd=root, env=env),
            "bare OpenDP/Polars": lambda: run([PY, __file__, "_bare_stats", str(data)],
                                              cwd=root, env=env),
        }
        goal_ratio, goal_mib = 2.0, 1024
    else:
        cases = {
            "buildenv synth (CLI)": lambda: run(
                [PY, "-m", "buildenv", "synth", "big", "--dataset", "big", "--rows", str(rows),
                 "--epsilon", "1", "--out", "data/synthetic/big.parquet"], cwd=root, env=env),
            "bare OpenDP MST pipeline": lambda: run(
                [PY, __file__, "_bare_synth", str(data), str(rows),
                 str(root / "bare.parquet")], cwd=root, env=env),
        }
        goal_ratio, goal_mib = 1.2, 2048
    series = alternate(cases, repeats, warmup=False)
    ours, bare = list(series.values())
    size = data.stat().st_size / 2**20
    print(f"\n{opts.kind}: {rows:,} rows, {data.name} {size:.0f} MiB, {repeats} round(s)\n")
    rows_out = []
    for s in series.values():
        rows_out.append((s.name, f"{s.median:.1f}", f"{s.median / bare.median:.2f}x",
                         f"{s.cpu:.1f}", f"{s.rss_mb:.0f}"))
    print(table(["case", "wall s (median)", "vs bare", "cpu s", "peak RSS MiB"], rows_out))
    ratio = ours.median / bare.median
    print(f"\n- buildenv / bare: {ratio:.2f}x (goal <= {goal_ratio}x: "
          f"{verdict(ratio <= goal_ratio)})")
    print(f"- buildenv peak RSS: {ours.rss_mb:.0f} MiB (goal <= {goal_mib} MiB: "
          f"{verdict(ours.rss_mb <= goal_mib)})")
    for s in series.values():
        for r in s.runs:
            try:
                work = json.loads(r.stdout.strip().splitlines()[-1]).get("work_seconds")
                if work:
                    print(f"- {s.name}: {work:.1f} s after imports")
            except (ValueError, IndexError, AttributeError):
                pass


if __name__ == "__main__":
    main()
