"""Builds on label sets: `ctx.read`/`ctx.labels()` alignment, lineage, evaluation by key,
promotion, copy-on-write relabel overlays, key coverage and the static checks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import invoke_cli
from labelrepo import (
    BASE,
    annotation,
    expected_labels,
    export,
    items_table,
    make_label_repo,
    pairs_sha,
    v1_tasks,
    v2_tasks,
    yaml_line,
)

from buildenv.data.evaluation import holdout_mask

pytestmark = pytest.mark.slow

RELABEL = """\
name: relabel
extends: base
labels:
  kind-fix:
    uri: data/kind-fix.json
    dataset: items
    key: item_id
    field: kind
    taxonomy: {name: kind, version: 1, classes: [a, b, c]}
    ui_version: "1"
    reuse:
      - {labels: kind-v1}
label: {labels: kind-fix}
"""

PLAIN = '''
from sklearn.linear_model import LogisticRegression


def train(ctx):
    X = ctx.read("items", columns=["x1", "x2"])
    return LogisticRegression().fit(X, ["a"] * (len(X) - 1) + ["b"])
'''


def fix_tasks() -> list[dict]:
    """Annotator 9 relabels the first five items v1 labeled `a` or `b`, flipping a<->b."""
    out = []
    for key, label in expected_labels(v1_tasks(items_table())).items():
        if label in ("a", "b") and len(out) < 5:
            out.append({"id": 7000 + len(out), "data": {"item_id": int(key)},
                        "annotations": [annotation(7000 + len(out), 9,
                                                   "b" if label == "a" else "a")]})
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_label_repo(tmp_path_factory.mktemp("labels") / "repo", envs={
        "relabel": RELABEL}, files={"data/kind-fix.json": export(fix_tasks()),
                                    "train/plain.py": PLAIN})
    code, out, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


def expected_training(labels: dict[str, str]) -> tuple[list[int], list[str], int]:
    """Rows `ctx.read` must return: dataset order, labeled, not held out by item_id."""
    table = items_table()
    held = holdout_mask(pa.table({"item_id": table.column("item_id")}), ["item_id"], 0.2)
    keys, values, evaluated = [], [], 0
    for key, out in zip(table.column("item_id").to_pylist(), held):
        if str(key) not in labels:
            continue
        if out:
            evaluated += 1
        else:
            keys.append(key)
            values.append(labels[str(key)])
    return keys, values, evaluated


def expected_v2() -> dict[str, str]:
    table = items_table()
    own = expected_labels(v2_tasks(table))
    want = {k: v for k, v in own.items() if v is not None}
    for k, v in expected_labels(v1_tasks(table)).items():
        if k not in own and v in ("a", "c"):
            want[k] = {"a": "a", "c": "cd"}[v]
    return want


@pytest.mark.parametrize("env", ["base", "v2", "relabel"])
def test_training_sees_labeled_rows_and_aligned_labels(repo, env):
    code, out, err = invoke_cli(["build", "tagger", "--env", env, "--no-register"], repo)
    assert code == 0, err
    lineage = json.loads((repo / "dist/tagger" / env / "buildenv.json").read_text())
    if env == "base":
        labels = {k: v for k, v in expected_labels(v1_tasks(items_table())).items() if v}
    elif env == "v2":
        labels = expected_v2()
    else:
        labels = {k: v for k, v in expected_labels(v1_tasks(items_table())).items() if v}
        labels.update({str(t["data"]["item_id"]): t["annotations"][0]["result"][0]["value"][
            "choices"][0] for t in fix_tasks()})
    keys, values, evaluated = expected_training(labels)
    assert lineage["metrics"]["n_train"] == len(keys)
    assert lineage["params"]["pairs_sha"] == pairs_sha(keys, values)
    assert lineage["evaluation"]["rows"] == evaluated
    assert lineage["evaluation"]["key"] == ["item_id"] and "accuracy" in \
        lineage["evaluation"]["metrics"]
    name = {"base": "kind-v1", "v2": "kind-v2", "relabel": "kind-fix"}[env]
    entry = lineage["labels"][name]
    lock = json.loads((repo / "environments" / f"{env}.lock.json").read_text())
    assert entry["digest"] == lock["labels"][name]["digest"]
    assert entry["taxonomy"]["name"] == "kind" and entry["label"] is True
    assert entry["resolution"]["training_rows"] == len(keys)
    assert entry["resolution"]["examples"] == len(labels)
    if env == "v2":
        assert entry["ui_version"] == "2" and entry["taxonomy"]["version"] == 2
        assert list(entry["mappings"]) == ["data/v1-to-v2.sssom.tsv"]
        assert entry["reuse"] == ["kind-v1"] and entry["resolution"]["from_reuse"] > 0
        assert lineage["labels"]["kind-v1"]["label"] is False
    if env == "relabel":  # the overlay: five keys relabeled, the parent's file not copied
        assert entry["resolution"]["own"] == 5
        assert entry["resolution"]["from_reuse"] == len(labels) - 5
        assert lineage["labels"]["kind-v1"]["uri"] == "data/kind-v1.json"


def test_rebuild_says_which_label_set_changed(repo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    assert invoke_cli(["build", "tagger", "--env", "base", "--no-register"], copy)[0] == 0
    tasks = v1_tasks(items_table())
    tasks[0]["annotations"].append(annotation(99999, 3, "c", "2026-07-30T10:00:00Z"))
    (copy / "data/kind-v1.json").write_text(export(tasks))
    assert invoke_cli(["lock", "base"], copy)[0] == 0
    code, out, err = invoke_cli(["build", "tagger", "--env", "base", "--no-register"], copy)
    assert code == 0, err
    assert "built (label set 'kind-v1' changed)" in out


def test_promotion_scores_on_the_held_out_labeled_rows(repo):
    code, out, err = invoke_cli(["build", "tagger", "--env", "base"], repo)
    assert code == 0, err
    code, out, err = invoke_cli(["promote", "tagger", "--env", "base"], repo)
    assert code == 0, out + err
    labels = {k: v for k, v in expected_labels(v1_tasks(items_table())).items() if v}
    _, _, evaluated = expected_training(labels)
    assert f"on the {evaluated:,} held-out rows (20% of 'items' by key item_id)" in out


def test_static_checks_know_ctx_labels(repo, tmp_path):
    column = make_label_repo(tmp_path / "column", envs={"base": BASE.replace(
        "label: {labels: kind-v1}", "label: {dataset: items, column: name}"), "v2": None})
    code, out, err = invoke_cli(["check", "tagger", "--env", "base"], column)
    assert code == 1
    line, col = yaml_line(column / "train/tagger.py", "ctx.labels()")
    assert (f"train/tagger.py:{line}:{col}: error[BE864]: ctx.labels() needs a label set, but "
            "environment base takes its label from column 'items.name'") in err
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + (
        '\n[tool.buildenv.trainings.plain]\nentry = "train/plain.py:train"\n'
        'environments = ["base"]\n'))
    code, out, err = invoke_cli(["check", "plain", "--env", "base"], repo)
    assert code == 0
    assert ("train/plain.py:5: warning[BE865]: environment base takes its label from label set "
            "'kind-v1', but the training never calls ctx.labels()") in err


def test_keys_missing_from_the_dataset_stop_the_build(tmp_path):
    tasks = v1_tasks(items_table())
    tasks.append({"id": 1, "data": {"item_id": 4040}, "annotations": [annotation(1, 1, "a")]})
    tasks.append({"id": 2, "data": {"item_id": 4041}, "annotations": [annotation(2, 1, "b")]})
    root = make_label_repo(tmp_path / "keys", envs={"v2": None},
                           files={"data/kind-v1.json": export(tasks)})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = invoke_cli(["build", "tagger", "--env", "base", "--no-register"], root)
    assert code == 1
    line, col = yaml_line(root / "environments/base.yaml", "key: item_id")
    assert (f"environments/base.yaml:{line}:{col}: error[BE862]: label set 'kind-v1': 2 of "
            f"{len(tasks)} annotated example(s) have a key that dataset 'items' does not hold in "
            f"column 'item_id' (e.g. 4040, 4041; first at data/kind-v1.json:{len(tasks)})") in err
    assert not (root / "dist").exists()


def test_no_usable_label_stops_the_build(tmp_path):
    tasks = [{"id": i, "data": {"item_id": i}, "annotations": [
        annotation(2 * i, 1, "a"), annotation(2 * i + 1, 2, "b")]} for i in range(1, 20)]
    root = make_label_repo(tmp_path / "ties", envs={"v2": None},
                           files={"data/kind-v1.json": export(tasks)})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = invoke_cli(["build", "tagger", "--env", "base", "--no-register"], root)
    assert code == 1
    assert "warning[BE861]: label set 'kind-v1': 19 example(s) have tied votes" in err
    assert "error[BE866]: label set 'kind-v1' leaves no example of dataset 'items' with a " \
        "usable label" in err
