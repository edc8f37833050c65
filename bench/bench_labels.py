"""Benchmark label-set import and lock: a 1M-annotation Label Studio export.

    python bench/bench_labels.py [--annotations 1000000] [--repeats 3]

A seeded export (tasks of 1-4 annotators, ~2.5 on average, 12 classes, a few cancelled,
`completed_by` as ids, ISO `created_at`) and a Parquet dataset holding its keys. Timed in
child processes, alternating round by round, page cache warm:

- baseline: the standard library reads the JSON (`json.load`) and pydantic validates it
  with the same models buildenv uses (`TypeAdapter(list[Task])`): reading plus validation,
  nothing else;
- `buildenv lock` cold (stat cache and lock removed before each run): hash the export while
  it is parsed (streaming, pinned through the data gate), validate, count examples,
  annotations and annotators, hash the dataset, check double exposure, write the lock;
- `buildenv lock` again, unchanged (stat cache warm): nothing is parsed;
- `buildenv labels` (resolution, agreement, checks), for reference.

Goal: cold lock within 2x the baseline. Run with the project's Python (`.venv/bin/python`);
buildenv is imported from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, alternate, machine, run, table, verdict, work_dir

SEED = 20261101
CLASSES = ["c%02d" % i for i in range(12)]

ENV = """\
name: bench
datasets:
  items:
    uri: data/items.parquet
    columns:
      item_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
labels:
  kind:
    uri: data/export.json
    dataset: items
    key: item_id
    field: kind
    taxonomy: {name: kind, version: 1, classes: [%s]}
    ui_version: "1"
label: {labels: kind}
""" % ", ".join(CLASSES)

BASELINE = """
import json, sys
from buildenv.labels.label_studio import tasks_adapter
with open(sys.argv[1], "rb") as f:
    data = json.load(f)
tasks = tasks_adapter().validate_python(data)
print(sum(len(t.annotations) for t in tasks))
"""


def make_export(path: Path, annotations: int) -> int:
    import numpy as np

    rng = np.random.default_rng(SEED)
    per_task = rng.choice([1, 2, 3, 4], size=annotations, p=[0.2, 0.3, 0.3, 0.2])
    ends = np.cumsum(per_task)
    tasks = int(np.searchsorted(ends, annotations)) + 1
    truth = rng.integers(0, len(CLASSES), tasks)
    ann_id = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("[\n")
        for t in range(tasks):
            n = int(per_task[t]) if t < tasks - 1 else annotations - int(ends[t - 1] if t else 0)
            who = rng.choice(200, size=n, replace=False) + 1
            anns = []
            for w in who.tolist():
                ann_id += 1
                label = CLASSES[truth[t]] if rng.random() < 0.85 else \
                    CLASSES[int(rng.integers(0, len(CLASSES)))]
                day, sec = int(rng.integers(1, 29)), int(rng.integers(0, 86400))
                anns.append({
                    "id": ann_id, "completed_by": w,
                    "created_at": f"2026-07-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:"
                                  f"{sec % 60:02d}.000000Z",
                    "updated_at": f"2026-07-{day:02d}T00:00:00.000000Z",
                    "lead_time": round(float(rng.gamma(2.0, 9.0)), 1),
                    "was_cancelled": bool(rng.random() < 0.01),
                    "result": [{"id": f"r{ann_id}", "from_name": "kind", "to_name": "text",
                                "type": "choices", "value": {"choices": [label]}}]})
            task = {"id": t + 1, "data": {"item_id": t + 1, "text": f"item number {t + 1}"},
                    "annotations": anns, "predictions": []}
            out.write(("," if t else "") + json.dumps(task, separators=(",", ":")) + "\n")
        out.write("]\n")
    os.replace(tmp, path)
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--annotations", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = work_dir(f"labels-{args.annotations}")
    data = root / "data"
    data.mkdir(exist_ok=True)
    export = data / "export.json"
    if not export.exists():
        print(f"writing a {args.annotations:,}-annotation export ...", flush=True)
        tasks = make_export(export, args.annotations)
        pq.write_table(pa.table({"item_id": np.arange(1, tasks + 1, dtype=np.int64),
                                 "x": np.random.default_rng(1).random(tasks)}),
                       data / "items.parquet")
    (root / "environments").mkdir(exist_ok=True)
    (root / "environments" / "bench.yaml").write_text(ENV)
    (root / "pyproject.toml").write_text("[tool.buildenv]\nenvironments_dir = \"environments\"\n")
    (root / "baseline.py").write_text(BASELINE)
    size = export.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    py = sys.executable
    lock_file = root / "environments" / "bench.lock.json"

    def cold() -> None:
        shutil.rmtree(root / ".buildenv", ignore_errors=True)
        lock_file.unlink(missing_ok=True)

    print(f"{machine()}; export {size / 2**20:.0f} MiB", flush=True)
    series = alternate({
        "baseline": lambda: run([py, root / "baseline.py", export], cwd=root, env=env),
        "lock": lambda: run([py, "-m", "buildenv", "lock"], cwd=root, env=env),
    }, args.repeats, before={"lock": cold})
    entry = json.loads(lock_file.read_text())["labels"]["kind"]
    warm = alternate({"relock": lambda: run([py, "-m", "buildenv", "lock"], cwd=root, env=env)},
                     args.repeats)
    report = alternate({"labels": lambda: run([py, "-m", "buildenv", "labels", "bench"],
                                              cwd=root, env=env)}, 1, warmup=False)
    base, lock = series["baseline"], series["lock"]
    rows = [("stdlib json.load + pydantic validation", f"{base.median:.2f}", f"{base.cpu:.2f}",
             "1.00x", f"{base.rss_mb:.0f}"),
            ("buildenv lock (cold)", f"{lock.median:.2f}", f"{lock.cpu:.2f}",
             f"{lock.median / base.median:.2f}x", f"{lock.rss_mb:.0f}"),
            ("buildenv lock (unchanged)", f"{warm['relock'].median:.2f}",
             f"{warm['relock'].cpu:.2f}", f"{warm['relock'].median / base.median:.2f}x",
             f"{warm['relock'].rss_mb:.0f}"),
            ("buildenv labels (resolve, kappa, checks)", f"{report['labels'].median:.2f}",
             f"{report['labels'].cpu:.2f}", f"{report['labels'].median / base.median:.2f}x",
             f"{report['labels'].rss_mb:.0f}")]
    print()
    print(table(["run", "wall s (median)", "cpu s", "vs baseline", "peak RSS MiB"], rows))
    ratio = lock.median / base.median
    print(f"\nlocked: {entry['annotations']:,} annotations, {entry['examples']:,} examples, "
          f"{entry['annotators']} annotators")
    print(f"cold lock / baseline: {ratio:.2f}x wall, {lock.cpu / base.cpu:.2f}x cpu "
          f"(goal <= 2x: {verdict(ratio <= 2.0)})")


if __name__ == "__main__":
    main()
