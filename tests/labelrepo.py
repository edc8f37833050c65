"""A small, seeded repository with label sets, for the label tests.

`items` (200 rows: item_id, x1, x2, name) is labeled by two Label Studio exports:
`kind-v1` (taxonomy kind v1: a, b, c; UI "1"; annotators 1-3, some items by two or three,
some cancelled annotations) and `kind-v2` (taxonomy v2: a, b1, b2, cd; UI "2"; annotators 4-5)
which relabels most `b` items and reuses the rest of v1 through an SSSOM mapping (a exact, b
split into b1/b2, c broader cd). Line numbers of the YAML files are pinned by tests: append,
don't insert.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.tagger]
entry = "train/tagger.py:train"
environments = ["*"]
"""

BASE = """\
name: base
datasets:
  items:
    uri: data/items.parquet
    columns:
      item_id: {dtype: int64, nullable: false}
      x1: {dtype: float64}
      x2: {dtype: float64}
      name: {dtype: string, serving: false}
labels:
  kind-v1:
    uri: data/kind-v1.json
    format: label-studio
    dataset: items
    key: item_id
    field: kind
    taxonomy: {name: kind, version: 1, classes: [a, b, c]}
    ui_version: "1"
label: {labels: kind-v1}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.preprocessing.*, sklearn.linear_model.*]
  requirements: ["scikit-learn>=1.6,<2"]
promotion: {metric: accuracy, min_value: 0.2}
"""

V2 = """\
name: v2
extends: base
labels:
  kind-v2:
    uri: data/kind-v2.json
    dataset: items
    key: item_id
    field: kind
    taxonomy: {name: kind, version: 2, classes: [a, b1, b2, cd]}
    ui_version: "2"
    reuse:
      - {labels: kind-v1, mapping: data/v1-to-v2.sssom.tsv}
label: {labels: kind-v2}
"""

MAPPING = """\
# curie_map:
#   kv1: "urn:test:kind:1:"
#   kv2: "urn:test:kind:2:"
subject_id\tpredicate_id\tobject_id\tmapping_justification
kv1:a\tskos:exactMatch\tkv2:a\tsemapv:ManualMappingCuration
kv1:b\tskos:narrowMatch\tkv2:b1\tsemapv:ManualMappingCuration
kv1:b\tskos:narrowMatch\tkv2:b2\tsemapv:ManualMappingCuration
kv1:c\tskos:broadMatch\tkv2:cd\tsemapv:ManualMappingCuration
"""

TAGGER = '''
import hashlib

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train(ctx):
    X = ctx.read("items", columns=["item_id", "x1", "x2"])
    y = ctx.labels()
    assert len(X) == len(y)
    pairs = ";".join(f"{k}:{v}" for k, v in zip(X["item_id"], y))
    ctx.log_param("pairs_sha", hashlib.sha256(pairs.encode()).hexdigest())
    ctx.log_metric("n_train", float(len(X)))
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X[["x1", "x2"]], y)
'''

N = 200


def items_table(n: int = N, seed: int = 11, names: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"item_id": pa.array(np.arange(1, n + 1), pa.int64()),
                     "x1": rng.normal(0, 1, n), "x2": rng.normal(0, 1, n),
                     "name": names or [f"item {i}" for i in range(1, n + 1)]})


def truth_v1(x1: float, x2: float) -> str:
    return "a" if x1 > 0.3 else ("b" if x2 > 0 else "c")


def truth_v2(x1: float, x2: float) -> str:
    v1 = truth_v1(x1, x2)
    return {"a": "a", "c": "cd"}.get(v1) or ("b1" if x2 > 0.8 else "b2")


def annotation(ann_id: int, who, choice: str | None, when: str = "2026-07-01T10:00:00Z",
               cancelled: bool = False, field: str = "kind") -> dict:
    result = [] if choice is None else [
        {"from_name": field, "to_name": "text", "type": "choices",
         "value": {"choices": [choice]}}]
    return {"id": ann_id, "completed_by": who, "created_at": when, "was_cancelled": cancelled,
            "result": result}


def export(tasks: list[dict]) -> str:
    """A Label Studio export, one task per line: task i starts on line i + 2."""
    return "[\n" + ",\n".join(json.dumps(t) for t in tasks) + "\n]\n"


def v1_tasks(table: pa.Table, seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    tasks = []
    ids = 0
    for i, (key, x1, x2) in enumerate(zip(*(table.column(c).to_pylist()
                                             for c in ("item_id", "x1", "x2")))):
        if i % 10 == 9:
            continue  # 10% of the items are not annotated
        truth = truth_v1(x1, x2)
        who_all = [1] if i % 3 else ([1, 2] if i % 2 else [1, 2, 3])
        anns = []
        for who in who_all:
            ids += 1
            choice = truth if rng.random() < 0.85 else str(rng.choice(["a", "b", "c"]))
            anns.append(annotation(ids, who, choice, f"2026-07-{1 + i % 28:02d}T10:00:00Z",
                                   cancelled=(i % 17 == 0 and who == 1 and len(who_all) > 1)))
        tasks.append({"id": 1000 + i, "data": {"item_id": key, "text": f"item {key}"},
                      "annotations": anns})
    return tasks


def v2_tasks(table: pa.Table) -> list[dict]:
    tasks = []
    ids = 5000
    for i, (key, x1, x2) in enumerate(zip(*(table.column(c).to_pylist()
                                             for c in ("item_id", "x1", "x2")))):
        v1 = truth_v1(x1, x2)
        if not ((v1 == "b" and i % 4 != 0) or i % 10 == 9):
            continue  # relabel 3/4 of the b items and every item v1 did not annotate
        ids += 1
        tasks.append({"id": 2000 + i, "data": {"item_id": str(key)},  # keys as strings
                      "annotations": [annotation(ids, {"id": 4 + i % 2, "email": "x@y"},
                                                 truth_v2(x1, x2), "2026-09-01T10:00:00Z")]})
    return tasks


def make_label_repo(root: Path, envs: dict[str, str] | None = None,
                    files: dict[str, str | bytes] | None = None) -> Path:
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    table = items_table()
    pq.write_table(table, root / "data" / "items.parquet")
    (root / "data" / "kind-v1.json").write_text(export(v1_tasks(table)))
    (root / "data" / "kind-v2.json").write_text(export(v2_tasks(table)))
    (root / "data" / "v1-to-v2.sssom.tsv").write_text(MAPPING)
    (root / "train" / "tagger.py").write_text(TAGGER)
    for name, text in {"base": BASE, "v2": V2, **(envs or {})}.items():
        path = root / "environments" / f"{name}.yaml"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(textwrap.dedent(text))
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def expected_labels(tasks: list[dict], field: str = "kind") -> dict[str, str | None]:
    """The documented rule, written plainly: per example, each annotator's latest
    non-cancelled choice counts once; the majority wins; a tie is None."""
    out: dict[str, str | None] = {}
    for task in tasks:
        latest: dict[str, tuple[str, int, str]] = {}
        for order, ann in enumerate(task["annotations"]):
            if ann["was_cancelled"]:
                continue
            choice = next((r["value"]["choices"][0] for r in ann["result"]
                           if r["from_name"] == field), None)
            if choice is None:
                continue
            who = ann["completed_by"]
            who = str(who["id"]) if isinstance(who, dict) else str(who)
            stamp = (ann["created_at"], order)
            if who not in latest or stamp >= latest[who][:2]:
                latest[who] = (ann["created_at"], order, choice)
        if not latest:
            continue
        votes: dict[str, int] = {}
        for _, _, choice in latest.values():
            votes[choice] = votes.get(choice, 0) + 1
        top = max(votes.values())
        winners = [c for c, v in votes.items() if v == top]
        out[str(task["data"]["item_id"])] = winners[0] if len(winners) == 1 else None
    return out


def pairs_sha(keys: list[int], labels: list[str]) -> str:
    text = ";".join(f"{k}:{v}" for k, v in zip(keys, labels))
    return hashlib.sha256(text.encode()).hexdigest()


def yaml_line(path: Path, needle: str) -> tuple[int, int]:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i, line.index(needle.strip()) + 1
    raise AssertionError(needle)
