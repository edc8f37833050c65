"""`buildenv tasks` (docs/labels.md, "Annotation tasks on request"): examples chosen by
--select, --overlap annotators each, one Label Studio import file per annotator, nobody sent
an example they labeled under another UI version (the double-exposure check passes on the
returned annotations), deterministic for a seed, refused for restricted data unless allowed,
nothing written on failure."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import invoke_cli
from labelrepo import annotation, make_label_repo

from buildenv.labels import tasks as tasks_module
from buildenv.labels.tasks import assign, import_files

RESTRICTED = """\
name: v2r
extends: v2
privacy:
  restricted: [items]
  annotators: ["4", "6"]
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_label_repo(tmp_path_factory.mktemp("tasks") / "repo", envs={"v2r": RESTRICTED})
    code, _, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def exports(root: Path) -> dict[str, list[dict]]:
    return {name: json.loads((root / "data" / f"{name}.json").read_text())
            for name in ("kind-v1", "kind-v2")}


def seen_under(root: Path) -> dict[str, set[tuple[str, str]]]:
    """(annotator, key) pairs of each export (ui 1 for v1, ui 2 for v2)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for name, tasks in exports(root).items():
        out[name] = {(str(a["completed_by"]["id"] if isinstance(a["completed_by"], dict)
                          else a["completed_by"]), str(t["data"]["item_id"]))
                     for t in tasks for a in t["annotations"] if not a["was_cancelled"]}
    return out


def sent(out: Path) -> dict[str, list[str]]:
    return {p.stem: [str(t["data"]["item_id"]) for t in json.loads(p.read_text())]
            for p in sorted(out.glob("*.json"))}


def run_tasks(root: Path, *args: str) -> tuple[int, str, str]:
    return invoke_cli(["tasks", "v2", "--labels", "kind-v2", *args], root)


def test_tasks_avoid_double_exposure_and_the_returned_labels_pass_the_check(repo):
    code, out, err = run_tasks(repo, "--select", "relabel", "--annotators", "1,4,6",
                               "--overlap", "2", "--out", "batch", "--seed", "3")
    assert code == 0, err
    files = sent(repo / "batch")
    assert sorted(files) == ["1", "4", "6"]
    umask = os.umask(0)
    os.umask(umask)  # the directory's mode is a mkdir's, not the private scratch one's
    assert (repo / "batch").stat().st_mode & 0o777 == 0o777 & ~umask
    per_key: dict[str, list[str]] = {}
    for who, keys in files.items():
        assert len(keys) == len(set(keys))
        for key in keys:
            per_key.setdefault(key, []).append(who)
    assert per_key and all(len(set(w)) == 2 for w in per_key.values())
    seen = seen_under(repo)
    for who, keys in files.items():
        for key in keys:
            assert (who, key) not in seen["kind-v1"]  # another UI version
            assert (who, key) not in seen["kind-v2"]  # already in this set
    first = json.loads((repo / "batch" / "6.json").read_text())[0]
    assert first["meta"] == {"annotator": "6", "label_set": "kind-v2", "taxonomy": "kind v2",
                             "ui_version": "2"}
    assert set(first["data"]) == {"item_id", "x1", "x2", "name"}
    # the annotators do their tasks under UI 2: the double-exposure check passes on them
    path = repo / "data" / "kind-v2.json"
    tasks = json.loads(path.read_text())
    ids = 90_000
    for who, keys in files.items():
        for key in keys:
            ids += 1
            tasks.append({"id": ids, "data": {"item_id": key},
                          "annotations": [annotation(ids, int(who), "b1",
                                                     "2026-10-01T10:00:00Z")]})
    path.write_text(json.dumps(tasks))
    code, _, err = invoke_cli(["lock", "v2"], repo)
    assert code == 0, err
    code, out, err = invoke_cli(["labels", "v2"], repo)
    assert code == 0 and "BE863" not in err, err


def test_a_set_that_cannot_be_covered_is_listed_and_nothing_is_written(repo):
    code, _, err = run_tasks(repo, "--select", "relabel", "--annotators", "1,2,3",
                             "--overlap", "2", "--out", "batch")
    assert code == 1 and "BE869" in err and "(0 eligible)" in err, err
    assert not (repo / "batch").exists()


def test_overlap_beyond_the_annotators_is_a_usage_error(repo):
    code, _, err = run_tasks(repo, "--annotators", "4,5", "--overlap", "3", "--out", "batch")
    assert code == 2 and "BE868" in err and not (repo / "batch").exists()


@pytest.mark.parametrize("args,says", [
    (("--annotators", "4,5", "--overlap", "0"), "at least one annotator"),
    (("--annotators", "4,5", "--seed", "-3"), "--seed -3 is negative"),
    (("--annotators", "../4,5"), "'../4' cannot name a file"),
    (("--annotators", "4,a/b"), "'a/b' cannot name a file"),
    (("--annotators", "4,.."), "'..' cannot name a file"),
    (("--annotators", "4," + "a" * 300), "too long to name a file"),
    (("--annotators", "4,Ann,ann"), "differ only in case"),
    (("--annotators", "4,\u00e9,e\u0301"), "differ only in case or Unicode form"),
    (("--annotators", "4, 5 ,4"), "lists '4' more than once"),
    (("--annotators", "4,5,"), "none empty"),
])
def test_a_bad_overlap_seed_or_annotator_id_is_a_usage_error(repo, args, says):
    code, _, err = run_tasks(repo, *args, "--out", "batch")
    assert code == 2 and "BE868" in err and says in err and "internal error" not in err, err
    assert not (repo / "batch").exists() and not list(repo.rglob("4.json"))


def test_the_same_seed_gives_the_same_files_and_another_seed_another_order(repo):
    args = ("--select", "unlabeled", "--annotators", "4,5,6", "--overlap", "1")
    assert run_tasks(repo, *args, "--out", "a", "--seed", "1")[0] == 0
    assert run_tasks(repo, *args, "--out", "b", "--seed", "1")[0] == 0
    assert run_tasks(repo, *args, "--out", "c", "--seed", "2")[0] == 0
    for name in ("4", "5", "6"):
        assert (repo / "a" / f"{name}.json").read_bytes() == \
            (repo / "b" / f"{name}.json").read_bytes()
    for path in (repo / "a").glob("*.json"):  # the `json` encoder's text, indent 1
        text = path.read_text("utf-8")
        assert text == json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False,
                                  indent=1) + "\n"
    assert sent(repo / "a") != sent(repo / "c")
    everyone = sorted(k for keys in sent(repo / "a").values() for k in keys)
    assert everyone == sorted(k for keys in sent(repo / "c").values() for k in keys)


def test_an_existing_output_directory_is_not_overwritten(repo):
    (repo / "batch").mkdir()
    (repo / "batch" / "notes.txt").write_text("keep")
    code, _, err = run_tasks(repo, "--annotators", "4", "--out", "batch")
    assert code == 2 and "BE868" in err
    assert [p.name for p in (repo / "batch").iterdir()] == ["notes.txt"]


def test_restricted_examples_go_only_to_allowed_annotators_and_are_audited(repo):
    code, _, err = invoke_cli(["tasks", "v2r", "--labels", "kind-v2", "--annotators", "4,5",
                               "--out", "batch"], repo)
    assert code == 2 and "BE879" in err and "5" in err and not (repo / "batch").exists()
    code, _, err = invoke_cli(["tasks", "v2r", "--labels", "kind-v2", "--annotators", "4,6",
                               "--out", "batch"], repo)
    assert code == 0, err
    records = [json.loads(line) for line in
               (repo / ".buildenv/audit/log.jsonl").read_text().splitlines()]
    export = [r for r in records if r["purpose"] == "tasks" and "annotators" in
              r.get("details", {})]
    assert len(export) == 1
    assert export[0]["details"]["annotators"] == ["4", "6"]
    assert export[0]["dataset"] == "items"


def test_assignment_is_balanced_and_routes_around_what_was_seen():
    keys = pa.array([str(i) for i in range(1000)])
    seen = pa.table({"key": pa.array([str(i) for i in range(0, 1000, 7)]),
                     "annotator": pa.array(["a"] * len(range(0, 1000, 7)))})
    result = assign(keys, ["a", "b", "c", "d"], 2, seen, seed=4)
    assert not len(result.uncovered)
    counts = {k: len(v) for k, v in result.tasks.items()}
    assert sum(counts.values()) == 2000
    assert max(counts.values()) - min(counts.values()) <= len(range(0, 1000, 7))
    assert not set(result.tasks["a"].to_pylist()) & set(seen.column("key").to_pylist())
    again = assign(keys, ["a", "b", "c", "d"], 2, seen, seed=4)
    assert all(np.array_equal(again.tasks[k].to_numpy(zero_copy_only=False),
                              result.tasks[k].to_numpy(zero_copy_only=False))
               for k in result.tasks)

    assert all(result.tasks[k].equals(keys.take(pa.array(result.positions[k])))
               for k in result.tasks)


def reference(key: str, rows: pa.Table, meta: dict) -> bytes:
    """The import file as the `json` encoder writes it, value by value."""
    out = [{"data": {key: row[key], **{k: v.isoformat() if hasattr(v, "isoformat") else v
                                       for k, v in row.items() if k != key}}, "meta": meta}
           for row in rows.to_pylist()]
    return (json.dumps(out, sort_keys=True, ensure_ascii=False, indent=1, default=str)
            + "\n").encode("utf-8")


TYPES = pa.table({
    "id": pa.array([1, None, 3, 4], pa.int64()),
    "Zed": ["a\"b", "\u00e9\n\\", None, "\x01x\x7f"],
    "x": [0.1, float("nan"), float("inf"), -float("inf")],
    "f32": pa.array([1.5, None, 1e-7, 3.0], pa.float32()),
    "big": [1e16, 1e-5, 123456789.123, -0.0],
    "b": [True, False, None, True],
    "u": pa.array([2**64 - 1, 0, None, 5], pa.uint64()),
    "d": pa.array([dt.date(2026, 1, 1), None, dt.date(2020, 2, 2), dt.date(1, 1, 1)]),
    "ts": pa.array([dt.datetime(2026, 1, 1, 3, 4, 5, 6), None, dt.datetime(2020, 2, 2),
                    dt.datetime(2020, 2, 2, 1)], pa.timestamp("us", "UTC")),
    "dec": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("2"),
                     decimal.Decimal("-3.1")]),
    "bin": pa.array([b"x", None, b"\x00", b""]),
    "dic": pa.array(["p", "q", None, "p"]).dictionary_encode(),
})


@pytest.mark.parametrize("table", [TYPES, TYPES.append_column(
    "nested", pa.array([[1], [2, 3], None, []]))], ids=["scalars", "nested"])
@pytest.mark.parametrize("ui", ["2", None])
def test_import_files_are_the_json_encoders_text_for_every_column_type(table, ui):
    picks = {"a": np.array([3, 0, 2, 0]), "b": np.array([], np.int64), "c\"": np.array([1])}
    metas = {a: {"label_set": "s", "ui_version": ui, "annotator": a, "taxonomy": "t v1"}
             for a in picks}
    got = import_files("id", table, picks, metas)
    for name, pick in picks.items():
        assert got[name] == reference("id", table.take(pa.array(pick)), metas[name]), name


def test_many_tasks_are_spelled_column_by_column_not_by_the_pure_python_encoder(monkeypatch):
    """With an indent `json` encodes in Python: a million tasks took minutes (issue #22's
    `tasks` goal is 10 s). Only the one-task template may go through it."""
    real = json.dumps

    def one_task_at_most(value, *args, **kwargs):
        assert not isinstance(value, list) or len(value) <= 1, "encoded value by value"
        return real(value, *args, **kwargs)

    n = 5000
    rows = pa.table({"item_id": np.arange(n), "x": np.linspace(0, 1, n),
                     "kind": pa.array(["a", "b"] * (n // 2))})
    picks = {"4": np.arange(0, n, 2), "6": np.arange(n)[::-1]}
    metas = {a: {"label_set": "s", "ui_version": "2", "annotator": a, "taxonomy": "t v1"}
             for a in picks}
    monkeypatch.setattr(tasks_module.json, "dumps", one_task_at_most)
    got = import_files("item_id", rows, picks, metas)
    monkeypatch.setattr(tasks_module.json, "dumps", real)
    for name, pick in picks.items():
        assert got[name] == reference("item_id", rows.take(pa.array(pick)), metas[name])
