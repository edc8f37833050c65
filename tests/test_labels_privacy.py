"""Label sets of a restricted dataset show no example's data (issue 11).

A sentinel is planted as the key of a restricted dataset's row (the example id) and in the
task data of the Label Studio export. Every command that reads label sets runs -- lock, the
`labels` report (text and JSON), builds (success, a key missing from the dataset, a double
exposure, ties), label drift, promotion -- and the sentinel must appear in none of their
outputs, nor in any file under .buildenv/ (caches, MLflow store, audit log, drift statistics)
or dist/. Reads of the restricted label set are audited.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli, kept_copy_of_data
from labelrepo import annotation as _annotation
from labelrepo import export

pytestmark = pytest.mark.slow

SENTINEL = "SENTINEL-4b1d@people.example"

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.tagger]
entry = "train/tagger.py:train"
environments = ["*"]
"""

ENV = """\
name: people
datasets:
  people:
    uri: data/people.parquet
    columns:
      email: {dtype: string, nullable: false, serving: false}
      x1: {dtype: float64}
      x2: {dtype: float64}
labels:
  segment:
    uri: data/segment.json
    dataset: people
    key: email
    field: segment
    taxonomy: {name: segment, version: 1, classes: [low, high]}
    ui_version: "1"
label: {labels: segment}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.preprocessing.*, sklearn.linear_model.*]
privacy:
  restricted: [people]
promotion: {metric: accuracy, min_value: 0.1}
"""

SECOND = """\
name: people-v2
extends: people
labels:
  segment-v2:
    uri: data/segment-v2.json
    dataset: people
    key: email
    field: segment
    taxonomy: {name: segment, version: 2, classes: [low, high]}
    ui_version: "2"
    reuse:
      - {labels: segment}
label: {labels: segment-v2}
"""

TAGGER = '''
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train(ctx):
    X = ctx.read("people", columns=["email", "x1", "x2"])
    y = ctx.labels()
    print(X.to_string())
    ctx.log_param("first", X["email"].iloc[0])
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X[["x1", "x2"]], y)
'''

N = 300


def annotation(ann_id: int, who, choice: str, when: str = "2026-07-01T10:00:00Z") -> dict:
    return _annotation(ann_id, who, choice, when, field="segment")


def emails() -> list[str]:
    out = [f"user{i}@people.example" for i in range(N)]
    out[0] = SENTINEL  # a training row (held out or not, it is read and scored)
    return out


def people() -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({"email": emails(), "x1": rng.normal(0, 1, N), "x2": rng.normal(0, 1, N)})


def tasks(extra: list[dict] | None = None) -> list[dict]:
    table = people().to_pylist()
    out = []
    for i, row in enumerate(table):
        label = "high" if row["x1"] + row["x2"] > 0 else "low"
        anns = [annotation(2 * i, 1 + i % 3, label)]
        if i % 4 == 0:
            anns.append(annotation(2 * i + 1, 4, label))
        out.append({"id": i, "data": {"email": row["email"], "note": f"about {row['email']}"},
                    "annotations": anns})
    return out + (extra or [])


def make(root: Path, extra: list[dict] | None = None, second: list[dict] | None = None) -> Path:
    for folder in ("environments", "data", "train"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments/people.yaml").write_text(ENV)
    (root / "train/tagger.py").write_text(TAGGER)
    pq.write_table(people(), root / "data/people.parquet")
    (root / "data/segment.json").write_text(export(tasks(extra)))
    if second is not None:
        (root / "environments/people-v2.yaml").write_text(SECOND)
        (root / "data/segment-v2.json").write_text(export(second))
    return root


def run(root: Path, outputs: list[str], *args: str) -> tuple[int, str, str]:
    code, out, err = invoke_cli(list(args), root)
    outputs.append(f"$ buildenv {' '.join(args)}\n{out}\n{err}")
    return code, out, err


def leaks(root: Path) -> list[Path]:
    return [p for folder in (".buildenv", "dist") for p in (root / folder).rglob("*")
            if p.is_file() and SENTINEL.encode() in p.read_bytes()
            and not kept_copy_of_data(root, p)]


def test_no_example_of_a_restricted_label_set_reaches_any_output_or_file(tmp_path):
    outputs: list[str] = []
    root = make(tmp_path / "good", second=[
        {"id": 9000, "data": {"email": SENTINEL}, "annotations": [annotation(9000, 7, "high")]}])
    assert run(root, outputs, "lock")[0] == 0
    for fmt in ("yaml", "json"):
        code, out, err = run(root, outputs, "labels", "people-v2", "--format", fmt)
        assert code == 0, err
    code, out, err = run(root, outputs, "build", "tagger", "--env", "people")
    assert code == 0, err
    lineage = json.loads((root / "dist/tagger/people/buildenv.json").read_text())
    assert lineage["params"]["first"] == "[withheld]"
    assert lineage["labels"]["segment"]["resolution"]["training_rows"] > 100
    code, out, err = run(root, outputs, "promote", "tagger", "--env", "people")
    assert code == 0, out + err
    code, out, err = run(root, outputs, "drift", "people-v2", "--labels", "segment",
                         "--against-labels", "segment-v2", "--format", "json")
    assert code in (0, 1), err
    code, out, err = run(root, outputs, "audit", "--format", "json")
    records = json.loads(out)["records"]
    label_reads = [r for r in records if (r.get("details") or {}).get("labels") == "segment"]
    assert {r["purpose"] for r in label_reads} == {"lock", "build", "labels", "evaluate",
                                                   "drift"}
    assert all(r["dataset"] == "people" and r["rows"] for r in label_reads)

    # bad input on the same examples: counts and ids, never the keys
    bad = make(tmp_path / "bad", extra=[
        {"id": 5000, "data": {"email": "zz-" + SENTINEL},
         "annotations": [annotation(5000, 1, "low")]}])
    assert run(bad, outputs, "lock")[0] == 0
    code, out, err = run(bad, outputs, "build", "tagger", "--env", "people")
    assert code == 1 and "error[BE862]: label set 'segment': 1 of 301 annotated example(s)" \
        in err and "(first at data/segment.json:302)" in err and "e.g." not in err, err
    exposed = make(tmp_path / "exposed", second=[
        {"id": 9000, "data": {"email": SENTINEL}, "annotations": [annotation(9000, 1, "high")]}])
    code, out, err = run(exposed, outputs, "lock")
    assert code == 1 and "error[BE863]: double exposure: 1 annotator(s) labeled 1 example(s) " \
        "of 'people'" in err and "key(s)" not in err, err
    first = people().to_pylist()[0]  # the sentinel's row, labeled by annotators 1 and 4
    other = "low" if first["x1"] + first["x2"] > 0 else "high"
    tied = make(tmp_path / "tied", extra=[
        {"id": 6000, "data": {"email": SENTINEL}, "annotations": [
            annotation(6000, 5, other), annotation(6001, 6, other)]}])
    assert run(tied, outputs, "lock")[0] == 0
    code, out, err = run(tied, outputs, "labels", "people")
    assert code == 0 and "warning[BE861]" in err

    text = "\n".join(outputs)
    assert SENTINEL not in text, next(o for o in outputs if SENTINEL in o)[:2000]
    for repo in (root, bad, exposed, tied):
        assert leaks(repo) == []
    # the sentinel is really there to be found
    assert SENTINEL.encode() in (root / "data/segment.json").read_bytes()
    assert SENTINEL.encode() in (root / "data/people.parquet").read_bytes()
    shutil.copy(root / "data/segment.json", root / ".buildenv" / "probe.json")
    assert leaks(root) == [root / ".buildenv" / "probe.json"]
