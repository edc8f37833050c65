"""Code that makes data from restricted data shows no row value (docs/derived.md "Privacy",
docs/labels.md "Bad functions" and `buildenv labels`).

A sentinel is planted in a restricted dataset's `name` column. A labeling function and a
transform raise with it in their message, a function votes for it as a class, and the
successful lock and the `labels` report run: the sentinel appears in no output, nor in any file
under .buildenv/ or environments/ (caches, stored votes and outputs, the audit log, the lock).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli

SENTINEL = "SENTINEL-9f3c@people.example"

ENV = """\
name: people
datasets:
  people:
    uri: data/people.parquet
    columns:
      person_id: {dtype: int64, nullable: false}
      name: {dtype: string, nullable: false, serving: false}
      x: {dtype: float64}
  per_band:
    source:
      transform: transforms/bands.py:bands
      inputs: [people]
      aggregation: {count: n}
    columns:
      band: {dtype: int64}
      n: {dtype: int64, nullable: false}
labels:
  rules:
    dataset: people
    key: person_id
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    source:
      functions: rules/sign.py
label: {dataset: people, column: x}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.*]
privacy:
  restricted: [people]
  min_group_size: 10
"""

TRANSFORM = '''\
import numpy as np
import pandas as pd


def bands(ctx):
    df = ctx.read("people", columns=["name", "x"])
    band = np.floor(df["x"]).astype("int64")
    return band.value_counts().rename_axis("band").reset_index(name="n").sort_values("band")
'''

RULES = '''\
import numpy as np

import buildenv


@buildenv.labeling_function(columns=["x"])
def positive(batch):
    return np.where(batch["x"] > 0, "pos", None)


@buildenv.labeling_function(columns=["x", "name"])
def by_name(batch):
    return np.where(batch["name"].str.startswith("SENT"), "neg", None)
'''


def make_repo(root: Path) -> Path:
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "transforms").mkdir()
    (root / "rules").mkdir()
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    (root / "environments" / "people.yaml").write_text(ENV)
    (root / "transforms" / "bands.py").write_text(TRANSFORM)
    (root / "rules" / "sign.py").write_text(RULES)
    rng = np.random.default_rng(5)
    n = 400
    names = [f"person-{i}" for i in range(n)]
    names[0] = names[17] = SENTINEL
    pq.write_table(pa.table({"person_id": pa.array(np.arange(n), pa.int64()),
                             "name": pa.array(names, pa.string()),
                             "x": pa.array(np.round(rng.normal(size=n), 3))}),
                   root / "data" / "people.parquet")
    return root


def assert_nowhere(root: Path, *outputs: str) -> None:
    for text in outputs:
        assert SENTINEL not in text
    # the one place the bytes may be: the object store's copy of the restricted version the
    # lock pins (the input itself, readable by its owner only), never anything made from it
    objects = root / ".buildenv" / "objects"
    for folder in (root / ".buildenv", root / "environments"):
        for path in folder.rglob("*"):
            if path.is_file() and SENTINEL.encode() in path.read_bytes():
                assert path.is_relative_to(objects), path
                assert path.stat().st_mode & 0o777 == 0o400, path
                assert path.read_bytes() == (root / "data" / "people.parquet").read_bytes()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("sources-privacy") / "repo")
    code, out, err = invoke_cli(["lock", "people"], root)
    assert code == 0, err
    assert_nowhere(root, out, err)
    return root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def test_the_locked_outputs_and_the_report_hold_no_row_value(repo):
    code, out, err = invoke_cli(["labels", "people"], repo)
    assert code == 0, err
    assert "coverage" in out
    code, out2, err2 = invoke_cli(["labels", "people", "--format", "json"], repo)
    assert code == 0, err2
    assert_nowhere(repo, out, err, out2, err2)
    assert "estimated_accuracy" in out2


def test_the_report_shows_a_computed_sets_counts_only_as_released(repo):
    """The functions' figures are counts released by the privacy policy (withheld when small,
    noised under `release: dp`); the label set's own counts below them are the same counts,
    exactly: a class share withheld above was shown as a count below."""
    code, out, err = invoke_cli(["labels", "people"], repo)
    assert code == 0, err
    assert "class shares:" in out and "exact counts withheld: the dataset is restricted" in out
    for exact in ("per class:", "resolved ", "annotator  ", "examples "):
        assert exact not in out, out
    code, out, err = invoke_cli(["labels", "people", "--format", "json"], repo)
    item = json.loads(out)["label_sets"][0]
    assert item["counts_withheld"] and item["functions"]["per_class"]
    assert all(item[k] is None for k in ("examples", "resolved", "per_annotator",
                                         "annotations_per_class", "agreement"))


def test_a_failed_gate_names_no_function_figure_of_restricted_data(repo):
    env = repo / "environments" / "people.yaml"
    env.write_text(env.read_text().replace("functions: rules/sign.py",
                                           "functions: rules/sign.py\n      min_coverage: 0.99"))
    code, out, err = invoke_cli(["lock", "people"], repo)
    assert code == 1 and "BE876" in err and "figure withheld" in err, err
    assert "each function's" not in err and "%" not in err.replace("99.0%", ""), err


def test_keys_on_several_rows_of_restricted_data_are_not_counted(repo):
    """BE889 over restricted data says only that the dataset's keys repeat: how many keys the
    labeled rows share depends on which rows the functions label."""
    code, _, err = invoke_cli(["labels", "people"], repo)
    assert code == 0 and "BE889" not in err, err  # one row per person
    path = repo / "data" / "people.parquet"
    table = pq.read_table(path)
    ids = pa.array(np.arange(table.num_rows) % 300, pa.int64())
    pq.write_table(table.set_column(0, "person_id", ids), path)
    code, out, err = invoke_cli(["lock", "people"], repo)
    assert code == 0, err
    code, out, err = invoke_cli(["labels", "people"], repo)
    assert code == 0, err
    found = [line for line in err.splitlines() if "BE889" in line]
    assert len(found) == 1 and "keys of 'people' repeat on several rows (counts withheld" in \
        found[0], err
    assert not any(ch.isdigit() for ch in found[0].split("BE889", 1)[1]), found[0]


def test_an_aggregate_of_restricted_data_is_not_restricted_and_small_groups_are_withheld(repo):
    from buildenv.core.project import Project
    from buildenv.env.resolve import Multiverse

    env = Multiverse(Project.discover(repo)).resolve("people").env
    assert env.restricted("people") and not env.restricted("per_band")
    table = pq.read_table(repo / ".buildenv/derived/people/per_band.parquet")
    assert min(table.column("n").to_pylist()) >= 10
    assert sum(table.column("n").to_pylist()) < 400  # the tails were withheld


@pytest.mark.parametrize("where,body", [
    ("rules", '    raise ValueError("bad name " + batch["name"].iloc[0])'),
    ("rules", '    return np.where(batch["x"] > 0, batch["name"], None)'),
    # a lookup keyed by a row value raises KeyError(value): not a column read (BE871)
    ("rules", '    return [{"x": "pos"}[v] for v in batch["name"]]'),
    ("transform", '    raise ValueError("bad name " + df["name"].iloc[0])'),
    # an exception class named after a row value: its name is not quoted either
    ("rules", '    raise type(str(batch["name"].iloc[0]), (ValueError,), {})()'),
    ("transform", '    raise type(str(df["name"].iloc[0]), (ValueError,), {})()'),
    # what the code printed is shown when it fails, except over restricted data
    ("rules", '    print(batch["name"].iloc[0])\n    raise ValueError("bad")'),
    ("transform", '    print(df["name"].iloc[0])\n    raise ValueError("bad")'),
])
def test_failures_on_restricted_rows_quote_no_value(repo, where, body):
    if where == "rules":
        path = repo / "rules" / "sign.py"
        path.write_text(path.read_text() + '\n\n@buildenv.labeling_function(columns=["x", '
                        '"name"])\ndef leaky(batch):\n' + body + "\n")
    else:
        path = repo / "transforms" / "bands.py"
        path.write_text(path.read_text().replace(
            '    band = np.floor', body + '\n    band = np.floor'))
    code, out, err = invoke_cli(["lock", "people"], repo)
    assert code == 1 and ("BE872" in err or "BE874" in err or "BE340" in err), err
    assert_nowhere(repo, out, err)


@pytest.mark.parametrize("body", [
    # a pivot's columns are values it read: "undeclared: <name>, ..." quoted them
    '    return df.pivot_table(columns="name", values="x", aggfunc="sum")',
    '    return pd.concat([df.pivot_table(columns="name", values="x", aggfunc="sum")] * 2, axis=1)',
    '    return df.pivot_table(columns="name", values="x", aggfunc="sum").astype(object)'
    '.assign(**{"mixed": ["a"]})',
])
def test_columns_a_transform_made_from_restricted_values_are_not_named(repo, body):
    path = repo / "transforms" / "bands.py"
    path.write_text(path.read_text().replace('    band = np.floor', body + '\n    band = np.floor'))
    code, out, err = invoke_cli(["lock", "people"], repo)
    assert code == 1 and "BE341" in err, err
    assert "name withheld" in err or "names withheld" in err, err
    assert_nowhere(repo, out, err)


def test_a_failing_function_over_a_single_file_dataset_names_that_file(repo):
    path = repo / "rules" / "sign.py"
    path.write_text(path.read_text() + '\n\n@buildenv.labeling_function(columns=["name"])\n'
                    'def lookup(batch):\n    return [{"x": "pos"}[v] for v in batch["name"]]\n')
    code, out, err = invoke_cli(["lock", "people"], repo)
    assert code == 1 and "BE872" in err and "BE871" not in err, err
    assert "labeling function 'lookup' raised KeyError" in err, err
    assert "(file data/people.parquet)" in err, err
    assert_nowhere(repo, out, err)


class _Defined(ValueError):
    pass


def test_only_classes_defined_in_code_are_named_when_restricted():
    """The training's runner names exceptions the same way (`training.runner`)."""
    from buildenv.training.user_code import type_name

    made = type(SENTINEL, (KeyError,), {})
    assert type_name(made(), False) == SENTINEL  # not restricted: named as it is
    assert SENTINEL not in type_name(made(), True) and "KeyError" in type_name(made(), True)
    assert type_name(ValueError(), True) == "ValueError"
    assert type_name(_Defined(), True) == "_Defined"


def test_an_accuracy_withheld_reads_withheld_not_no_gold():
    """`-` says no gold row judges the function; a count too small to release says withheld."""
    from buildenv.labels.report import _function_lines

    def found(policy: str, gold: str | None) -> dict:
        return {"module": "r.py", "model": "majority", "gold": gold, "rows": 400,
                "release": {"policy": policy}, "coverage": 0.5, "conflict": 0.1,
                "per_class": {"pos": 0.5},
                "functions": {"f": {"coverage": 0.5, "overlaps": 0.1, "conflicts": 0.1,
                                    "accuracy": None, "judged_rows": None}}}

    assert _function_lines(found("exact", "gold"))[3].split()[-1] == "withheld"
    assert _function_lines(found("public", "gold"))[3].split()[-1] == "-"
    assert _function_lines(found("exact", None))[3].split()[-1] == "-"
