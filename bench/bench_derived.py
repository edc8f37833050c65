"""Data and labels made by code: the issue's ratios, each against its bare baseline in the same
run (docs/derived.md, docs/labels.md).

1. derived rebuild: a derived dataset over N input files, one file changed, `buildenv lock`
   vs the transform called on that file alone (pandas, in this process); and the full build vs
   the transform over all files in a bare loop.
2. labeling functions: the label model on ROWS x 10 votes (`generative`, `majority`) in
   seconds; applying 10 vectorised functions to pandas batches through buildenv's vote path
   (`training.label_run._call`: the declared columns, checks, class codes) vs calling them and
   converting their results to Arrow in a bare loop.
3. `tasks`: assigning EXAMPLES examples to 20 annotators (`labels.tasks.assign`), 1% of the
   pairs already seen.

    .venv/bin/python bench/bench_derived.py [--files 100] [--rows 10000000] [--examples 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from buildenv.labels.label_model import generative, majority  # noqa: E402
from buildenv.labels.tasks import assign  # noqa: E402

ENV = """\
name: b
datasets:
  events:
    uri: data/events/
    partitions: [day]
    columns:
      day: {dtype: int64}
      kind: {dtype: string}
      x: {dtype: float64}
  daily:
    source: {transform: t.py:daily, inputs: [events]}
    columns:
      day: {dtype: int64}
      kind: {dtype: string}
      n: {dtype: int64}
      mean_x: {dtype: float64}
"""

TRANSFORM = '''\
def daily(ctx):
    df = ctx.read("events", columns=["kind", "x"])
    return df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
'''


def _transform(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))


def _file(root: Path, day: int, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = root / "data" / "events" / f"day={day}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"kind": rng.choice(["a", "b", "c"], rows),
                             "x": rng.normal(size=rows)}), path)
    return path


def _lock(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "buildenv", "lock", "b"], cwd=root, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def derived(files: int, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "environments").mkdir()
        (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
        (root / "environments" / "b.yaml").write_text(ENV)
        (root / "t.py").write_text(TRANSFORM)
        paths = [_file(root, d, rows, d) for d in range(files)]
        past = time.time() - 120
        for p in paths:
            os.utime(p, (past, past))
        full = _lock(root)
        started = time.perf_counter()
        for p in paths:
            _transform(pq.read_table(p, columns=["kind", "x"]).to_pandas())
        bare_all = time.perf_counter() - started
        _file(root, 3, rows, 999)
        os.utime(paths[3], (past, past))
        one = _lock(root)
        started = time.perf_counter()
        _transform(pq.read_table(paths[3], columns=["kind", "x"]).to_pandas())
        bare_one = time.perf_counter() - started
        shutil.rmtree(root / ".buildenv", ignore_errors=True)
    print(f"derived, {files} files x {rows:,} rows: full build {full:.2f} s vs bare loop "
          f"{bare_all:.3f} s ({full / bare_all:.1f}x); one file changed {one:.2f} s vs that file "
          f"alone {bare_one:.4f} s ({one / bare_one:.0f}x)")


FUNCTIONS = [
    lambda b, t=t: np.where(b["x"].to_numpy() > t, "pos", None) for t in np.linspace(-2, 2, 5)
] + [
    lambda b, t=t: np.where(b["x"].to_numpy() < t, "neg", None) for t in np.linspace(-2, 2, 5)
]


def functions(rows: int, batch: int = 1_000_000) -> None:
    import buildenv
    from buildenv.training.label_run import _call

    declared = [buildenv.labeling_function(columns=["x"])(fn) for fn in FUNCTIONS]
    job = {"module": "bench", "taxonomy_version": "1"}
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"x": rng.normal(size=min(batch, rows - s))})
              for s in range(0, rows, batch)]
    classes = pa.array(["neg", "pos"])
    started = time.perf_counter()
    for frame in frames:
        for fn in FUNCTIONS:
            pa.array(fn(frame), type=pa.string(), from_pandas=True)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    for frame in frames:
        for j, fn in enumerate(declared):
            _call(fn, f"f{j}", frame, classes, job, "", False, ROOT, ROOT)
    ours = time.perf_counter() - started
    print(f"10 functions on {rows:,} rows: buildenv vote path {ours:.2f} s vs bare loop "
          f"{bare:.2f} s ({ours / bare:.2f}x)")


def label_model(rows: int) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, rows)
    matrix = np.full((rows, 10), -1, np.int8)
    for j in range(10):
        right = rng.random(rows) < 0.6 + 0.03 * j
        matrix[:, j] = np.where(rng.random(rows) < 0.5, np.where(right, truth, 1 - truth), -1)
    started = time.perf_counter()
    majority(matrix, 2)
    maj = time.perf_counter() - started
    started = time.perf_counter()
    labels, model = generative(matrix, ["a", "b"], [f"f{j}" for j in range(10)])
    gen = time.perf_counter() - started
    print(f"label model on {rows:,} x 10: majority {maj:.2f} s, generative {gen:.2f} s "
          f"({model.iterations} EM iterations), accuracy {(labels == truth).mean():.3f}")


def tasks(examples: int) -> None:
    keys = pa.array(np.arange(examples).astype(str))
    people = [f"a{i}" for i in range(20)]
    rng = np.random.default_rng(2)
    n_seen = examples // 100
    seen = pa.table({"key": keys.take(pa.array(rng.integers(0, examples, n_seen))),
                     "annotator": pa.array(rng.choice(people, n_seen))})
    started = time.perf_counter()
    result = assign(keys, people, 3, seen, seed=1)
    took = time.perf_counter() - started
    print(f"tasks: {examples:,} examples, 20 annotators, overlap 3: {took:.2f} s "
          f"({len(result.uncovered)} uncovered)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-rows", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--examples", type=int, default=1_000_000)
    args = parser.parse_args()
    tasks(args.examples)
    label_model(args.rows)
    functions(args.rows)
    derived(args.files, args.file_rows)


if __name__ == "__main__":
    main()
