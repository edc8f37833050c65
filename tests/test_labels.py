"""Label sets are locked build inputs (issue 11): format, lock, bad input, resolution, reuse,
exposure, the `labels` command and label drift. Builds are in test_labels_build.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from labelrepo import (
    BASE,
    MAPPING,
    V2,
    annotation,
    expected_labels,
    export,
    items_table,
    make_label_repo,
    v1_tasks,
    v2_tasks,
    yaml_line,
)

from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse
from buildenv.labels.annotations import ExportError
from buildenv.labels.label_studio import read_label_studio
from buildenv.labels.labelset import LabelError, LabelSets
from buildenv.labels.sssom import decide, parse_sssom


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_label_repo(tmp_path / "repo")


def lock(repo: Path, *envs: str) -> tuple[int, str, str]:
    return invoke_cli(["lock", *envs], repo)


def env_path(repo: Path, name: str) -> Path:
    return repo / "environments" / f"{name}.yaml"


def loc(repo: Path, env: str, needle: str) -> str:
    line, col = yaml_line(env_path(repo, env), needle)
    return f"environments/{env}.yaml:{line}:{col}"


# --- the format ------------------------------------------------------------------------------

def test_schema_documents_label_sets(repo):
    code, out, _ = invoke_cli(["schema", "--resolved"], repo)
    schema = json.loads(out)
    props = schema["$defs"]["LabelSet"]["properties"]
    assert {"uri", "format", "dataset", "key", "field", "taxonomy", "ui_version", "reuse",
            "exposure"} <= set(props)
    assert props["format"]["enum"] == ["label-studio", "parquet"]
    assert props["exposure"]["enum"] == ["exclusive", "allow"]
    assert set(schema["$defs"]["Reuse"]["properties"]) == {"labels", "mapping", "ambiguous"}
    assert "labels" in schema["$defs"]["Label"]["properties"]


def test_a_child_switching_the_label_form_replaces_the_whole_label(tmp_path):
    root = make_label_repo(tmp_path, envs={"base": BASE.replace(
        "label: {labels: kind-v1}", "label: {dataset: items, column: name}")})
    multiverse = Multiverse(Project.discover(root))
    assert multiverse.resolve("base").env.label.column == "name"
    label = multiverse.resolve("v2").env.label
    assert (label.labels, label.dataset, label.column) == ("kind-v2", None, None)


def test_label_with_both_forms_is_refused_at_its_line(tmp_path):
    root = make_label_repo(tmp_path, envs={"v2": V2.replace(
        "label: {labels: kind-v2}", "label: {labels: kind-v2, dataset: items}")})
    code, out, err = invoke_cli(["show", "v2"], root)
    assert code == 2
    line = yaml_line(env_path(root, "v2"), "label: {labels")[0]
    assert f"environments/v2.yaml:{line}:1: error[BE850]: label: label takes either `labels` " \
        "(a label set) or `dataset` and `column`, not both" in err


def test_unknown_label_set_and_reuse_cycle_are_configuration_errors(tmp_path):
    text = V2.replace("label: {labels: kind-v2}\n", "") + (
        "  kind-v1:\n"
        "    reuse:\n"
        "      - {labels: kind-v2}\n"
        "label: {labels: kind-v3}\n")
    root = make_label_repo(tmp_path, envs={"v2": text})
    cycle_line = yaml_line(env_path(root, "v2"), "- {labels: kind-v2}")[0]
    # a configuration error: exit 2 from build too, as from show and lock (issue 10)
    for command, exit_code in ((["show", "v2"], 2), (["lock", "v2"], 2),
                               (["build", "tagger", "--env", "v2", "--no-register"], 2)):
        code, out, err = invoke_cli(command, root)
        assert code == exit_code, (command, err)
        assert "error[BE851]: label: unknown label set 'kind-v3'" in err
        assert f"environments/v2.yaml:{cycle_line}:" in err
        assert "error[BE852]: labels.kind-v1.reuse: reuse cycle: kind-v1 -> kind-v2 -> " \
            "kind-v1" in err or "error[BE852]: labels.kind-v2.reuse: reuse cycle: kind-v2 -> " \
            "kind-v1 -> kind-v2" in err, err
        assert not (root / "dist").exists()
        assert not (root / "environments" / "v2.lock.json").exists()


def test_reuse_without_mapping_needs_the_same_classes(tmp_path):
    root = make_label_repo(tmp_path, envs={"v2": V2.replace(
        ", mapping: data/v1-to-v2.sssom.tsv", "")})
    code, _, err = invoke_cli(["lock", "v2"], root)
    assert code == 2
    assert (f"{loc(root, 'v2', '{labels: kind-v1')}: error[BE859]: labels.kind-v2.reuse: "
            "without a mapping every class of 'kind-v1' must be a class of this taxonomy; not: "
            "b, c") in err


def test_label_set_declaration_is_checked(tmp_path):
    text = BASE.replace("    key: item_id\n", "    key: x1\n").replace("    field: kind\n", "")
    root = make_label_repo(tmp_path, envs={"base": text, "v2": None})
    code, _, err = invoke_cli(["show", "base"], root)
    assert code == 2
    assert f"{loc(root, 'base', 'key: x1')}: error[BE850]: labels.kind-v1: key 'x1' is a " \
        "float64 column" in err
    assert "error[BE850]: labels.kind-v1: a Label Studio export needs `field`" in err


# --- the lock ----------------------------------------------------------------------------------

def test_lock_pins_label_sets_with_counts(repo):
    code, out, err = lock(repo)
    assert code == 0, err
    assert "v2: updated (1 dataset, 200 rows, 2 label set(s)," in out
    locked = read_lock(Project.discover(repo), "v2")
    v1, v2 = locked.labels["kind-v1"], locked.labels["kind-v2"]
    tasks = v1_tasks(items_table())
    kept = [a for t in tasks for a in t["annotations"] if not a["was_cancelled"]]
    assert (v1.examples, v1.annotations, v1.annotators) == (len(tasks), len(kept), 3)
    assert v1.taxonomy == {"name": "kind", "version": 1} and v1.ui_version == "1"
    assert v2.ui_version == "2" and v2.taxonomy["version"] == 2
    import hashlib
    assert v2.mappings == {"data/v1-to-v2.sssom.tsv": "sha256:" + hashlib.sha256(
        MAPPING.encode()).hexdigest()}
    assert v1.digest == "sha256:" + hashlib.sha256(
        (repo / "data/kind-v1.json").read_bytes()).hexdigest()
    code, out, err = invoke_cli(["lock", "--check"], repo)
    assert (code, out) == (0, "2 lock(s) up to date\n"), err


def test_relock_of_unchanged_label_sets_does_not_parse_them(repo, monkeypatch):
    import time
    time.sleep(1.1)  # files written within a second of being hashed are not trusted (racy)
    assert lock(repo)[0] == 0
    before = (repo / "environments/v2.lock.json").read_bytes()
    import buildenv.labels.labelset as labelset

    def refuse(*args, **kwargs):
        raise AssertionError("parsed an unchanged export")

    monkeypatch.setattr(labelset, "read_label_studio", refuse)
    code, out, err = lock(repo)
    assert code == 0, err
    assert "unchanged" in out and (repo / "environments/v2.lock.json").read_bytes() == before


def test_builds_refuse_stale_and_changed_label_locks(repo):
    assert lock(repo)[0] == 0
    path = env_path(repo, "v2")
    path.write_text(path.read_text().replace("ui_version: \"2\"", "ui_version: \"2.1\""))
    code, _, err = invoke_cli(["build", "tagger", "--env", "v2", "--no-register"], repo)
    assert code == 1
    assert (f"{loc(repo, 'v2', 'kind-v2:')}: error[BE057]: label set 'kind-v2' changed since it "
            "was locked") in err
    assert "hint: run `buildenv lock v2`" in err
    code, _, err = invoke_cli(["lock", "--check"], repo)
    assert code == 1 and "error[BE057]" in err
    assert lock(repo)[0] == 0
    tasks = v2_tasks(items_table())
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["b2"]
    (repo / "data/kind-v2.json").write_text(export(tasks))
    code, _, err = invoke_cli(["build", "tagger", "--env", "v2", "--no-register"], repo)
    assert code == 1
    assert f"{loc(repo, 'v2', 'uri: data/kind-v2.json')}: error[BE058]: label set 'kind-v2': " \
        "'data/kind-v2.json' changed since it was locked" in err
    (repo / "data/v1-to-v2.sssom.tsv").write_text(MAPPING.replace("kv1:c\tskos:broadMatch",
                                                                  "kv1:c\tskos:closeMatch"))
    code, _, err = invoke_cli(["lock", "--check"], repo)
    assert code == 1
    assert f"{loc(repo, 'v2', 'mapping: data/v1-to-v2')}: error[BE058]: label set 'kind-v2': " \
        "'data/v1-to-v2.sssom.tsv' changed since it was locked" in err
    assert invoke_cli(["envs"], repo)[1].splitlines()[2].split()[2] == "changed"
    assert not (repo / "dist").exists()


def test_a_read_that_does_not_match_the_lock_is_refused(repo):
    """The bytes parsed are verified against the lock's digest (BE059), after a lock check
    passed: a writer between the check and the read is caught."""
    assert lock(repo)[0] == 0
    project = Project.discover(repo)
    multiverse = Multiverse(project)
    res = multiverse.resolve("v2")
    pins = read_lock(project, "v2").label_pins()
    tasks = v1_tasks(items_table())
    tasks[3]["annotations"][0]["result"][0]["value"]["choices"] = ["c"]
    (repo / "data/kind-v1.json").write_text(export(tasks))
    sets = LabelSets(Gate(project, res.env, "build", where=res), pins, res)
    with pytest.raises(LabelError) as caught:
        sets.resolve("kind-v2")
    d = caught.value.diagnostics[0]
    assert d.code == "BE059" and "label set 'kind-v1' does not match the lock" in d.message
    assert (d.path, d.line) == ("environments/base.yaml", yaml_line(env_path(repo, "base"),
                                                                     "uri: data/kind-v1")[0])


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("content, line, message", [
    ('{"tasks": []}\n', 1, "a Label Studio export is a JSON array of tasks; this is a JSON "
     "object"),
    ("", 1, "this is an empty file"),
    ('[\n{"id": 1, "data": {"item_id": 1}, "annotations": []},\n{"id": 2, "data": \n', 4,
     "the export ends inside a task (is it truncated?)"),
    ('[\n{"id": 1, "data": {"item_id": 1}, "annotations": []}\n', 3,
     "the JSON array is not closed"),
    ('[\n{"id": 1, "data": {"item_id": 1}, "annotations": []},\n{"id": 2, "data": {"item_id": 2'
     '}, "annotations": [}]\n]\n', 3, "invalid JSON: Expecting value"),
    ('[\n{"id": 1, "data": {"item_id": 1}},\n{"id": 2, "annotations": []}\n]\n', 3,
     "not a Label Studio task: data: Field required"),
    ('[\n{"id": 1, "data": {"item_id": 1}},\n{"id": 2, "data": {"other": 2}}\n]\n', 3,
     "task 2 has no `data.item_id`"),
    ('[\n{"id": 7, "data": {"item_id": 1}, "annotations": [{"id": 1, "result": [{"from_name": '
     '"kind", "type": "choices", "value": {"choices": ["a"]}}]}]}\n]\n', 2,
     "task 7, annotation 1 has no `completed_by`"),
    ('[\n{"id": 7, "data": {"item_id": 1}, "annotations": [{"id": 1, "completed_by": 1, '
     '"result": [{"from_name": "kind", "type": "choices", "value": {"choices": ["a", "b"]}}]}]}'
     '\n]\n', 2, "'kind' holds 2 choices; a label set holds exactly one class per annotation"),
])
def test_an_export_that_is_not_label_studio_json(repo, content, line, message):
    (repo / "data/kind-v1.json").write_text(content)
    code, out, err = lock(repo, "base")
    assert code == 1, err
    assert (f"{loc(repo, 'base', 'uri: data/kind-v1')}: error[BE854]: label set 'kind-v1': "
            f"data/kind-v1.json:{line}: ") in err, err
    assert message in err
    assert not (repo / "environments/base.lock.json").exists()


def test_classes_outside_the_taxonomy(repo):
    tasks = v1_tasks(items_table())
    tasks[5]["annotations"][0]["result"][0]["value"]["choices"] = ["d"]
    tasks[9]["annotations"][0]["result"][0]["value"]["choices"] = ["d"]
    tasks[12]["annotations"][0]["result"][0]["value"]["choices"] = ["B"]
    (repo / "data/kind-v1.json").write_text(export(tasks))
    code, _, err = lock(repo)
    assert code == 1
    kept = sum(1 for t in tasks for a in t["annotations"] if not a["was_cancelled"])
    assert (f"{loc(repo, 'base', 'taxonomy: {name: kind, version: 1')}: error[BE856]: label set "
            f"'kind-v1': 3 of {kept} annotation(s) choose classes outside taxonomy kind v1: "
            "'d' 2 (first at data/kind-v1.json:7), 'B' 1 (first at data/kind-v1.json:14)") in err
    assert not list((repo / "environments").glob("*.lock.json"))


def test_a_field_no_annotation_has(repo):
    path = env_path(repo, "base")
    path.write_text(path.read_text().replace("field: kind", "field: genre"))
    code, _, err = lock(repo, "base")
    assert code == 1
    assert (f"{loc(repo, 'base', 'field: genre')}: error[BE867]: label set 'kind-v1': "
            "data/kind-v1.json: no annotation has a result from 'genre' (from_name seen: kind)"
            ) in err


@pytest.mark.parametrize("mapping, code, line, message", [
    (MAPPING.replace("kv1:c\tskos:broadMatch\tkv2:cd", "kv1:c\tskos:broadMatch\tkv2:c"), "BE858",
     8, "object_id 'kv2:c' is not a class of 'kind-v2' (kind v2)"),
    (MAPPING.replace("kv1:b\tskos:narrowMatch\tkv2:b2", "kv1:x\tskos:narrowMatch\tkv2:b2"),
     "BE858", 7, "subject_id 'kv1:x' is not a class of 'kind-v1' (kind v1)"),
    (MAPPING.replace("skos:broadMatch", "owl:sameAs"), "BE857", 8,
     "predicate_id 'owl:sameAs' is not one of skos:exactMatch"),
    (MAPPING.replace("object_id", "object"), "BE857", 4,
     "the header has no object_id column"),
    (MAPPING.replace("kv1:a\tskos:exactMatch\tkv2:a\t", "kv1:a skos:exactMatch kv2:a "), "BE857",
     5, "1 fields, the header has 4"),
])
def test_a_mapping_that_names_unknown_classes_or_is_not_sssom(repo, mapping, code, line,
                                                              message):
    (repo / "data/v1-to-v2.sssom.tsv").write_text(mapping)
    rc, _, err = lock(repo, "v2")
    assert rc == 1, err
    assert (f"{loc(repo, 'v2', 'mapping: data/v1-to-v2')}: error[{code}]: label set 'kind-v2': "
            f"data/v1-to-v2.sssom.tsv:{line}: {message}") in err, err
    assert not (repo / "environments/v2.lock.json").exists()


def test_a_missing_export_is_reported_at_its_uri(repo):
    (repo / "data/kind-v2.json").unlink()
    code, _, err = lock(repo, "v2")
    assert code == 1
    assert (f"{loc(repo, 'v2', 'uri: data/kind-v2.json')}: error[BE853]: label set 'kind-v2': "
            "'data/kind-v2.json' not found") in err


# --- double exposure ---------------------------------------------------------------------------

def exposed_repo(tmp_path: Path, exposure: str = "exclusive") -> Path:
    table = items_table()
    tasks = v2_tasks(table)
    # annotator 2 (a v1 annotator) relabels three items they labeled under UI 1
    seen = [t for t in v1_tasks(table) if any(a["completed_by"] == 2 for a in t["annotations"])]
    for i, task in enumerate(seen[:3]):
        tasks.append({"id": 9000 + i, "data": {"item_id": task["data"]["item_id"]},
                      "annotations": [annotation(9000 + i, 2, "a", "2026-09-02T10:00:00Z")]})
    v2 = V2 if exposure == "exclusive" else V2.replace("    ui_version: \"2\"\n",
                                                       "    ui_version: \"2\"\n    exposure: allow\n")
    base = BASE if exposure == "exclusive" else BASE.replace(
        "    ui_version: \"1\"\n", "    ui_version: \"1\"\n    exposure: allow\n")
    return make_label_repo(tmp_path / "exposed", envs={"v2": v2, "base": base},
                           files={"data/kind-v2.json": export(tasks)})


def test_double_exposure_under_exclusive_is_an_error(tmp_path):
    root = exposed_repo(tmp_path)
    code, _, err = lock(root)
    assert code == 1
    keys = [t["data"]["item_id"] for t in v1_tasks(items_table())
            if any(a["completed_by"] == 2 for a in t["annotations"])][:3]
    head = ("error[BE863]: double exposure: 1 annotator(s) labeled 3 example(s) of 'items' "
            "under UI versions 1, 2 (label sets ")
    assert (f"{loc(root, 'v2', 'kind-v2:')}: {head}kind-v1, kind-v2): annotators 2 (3); e.g. "
            f"items key(s) ") in err, err
    # base declares kind-v1 too: its lock and builds are refused as well
    assert f"{loc(root, 'base', 'kind-v1:')}: {head}kind-v1, v2:kind-v2): annotators 2 (3)" in err
    shown = err.split("key(s) ")[1].split("\n")[0].split(", ")
    assert sorted(shown) == sorted(str(k) for k in keys)
    assert not list((root / "environments").glob("*.lock.json"))
    code, _, err = invoke_cli(["build", "tagger", "--env", "base", "--no-register"], root)
    assert code == 1 and not (root / "dist").exists()


def test_double_exposure_with_allow_is_a_warning(tmp_path):
    root = exposed_repo(tmp_path, "allow")
    code, out, err = lock(root)
    assert code == 0, err
    assert "warning[BE863]: double exposure: 1 annotator(s) labeled 3 example(s)" in err


# --- resolution and reuse ----------------------------------------------------------------------

def resolved(repo: Path, env: str, name: str):
    assert lock(repo)[0] == 0
    project = Project.discover(repo)
    res = Multiverse(project).resolve(env)
    locked = read_lock(project, env)
    return LabelSets(Gate(project, res.env, "test", pins={
        n: d.digest for n, d in locked.datasets.items()}, where=res),
        locked.label_pins(), res).resolve(name)


def test_majority_latest_vote_per_annotator_ties_and_cancelled(repo):
    tasks = [
        {"id": 1, "data": {"item_id": 1}, "annotations": [
            annotation(1, 1, "a", "2026-07-01T10:00:00Z"),
            annotation(2, 1, "b", "2026-07-03T10:00:00Z"),   # annotator 1 changed their mind
            annotation(3, 2, "b", "2026-07-02T10:00:00Z")]},
        {"id": 2, "data": {"item_id": 2}, "annotations": [
            annotation(4, 1, "a"), annotation(5, 2, "c")]},   # a tie
        {"id": 3, "data": {"item_id": 3}, "annotations": [
            annotation(6, 1, "a"), annotation(7, 2, "c", cancelled=True)]},
        {"id": 4, "data": {"item_id": 4}, "annotations": [
            annotation(8, 1, None), annotation(9, 3, "c")]},  # no choice for the field
    ]
    (repo / "data/kind-v1.json").write_text(export(tasks))
    (repo / "environments/v2.yaml").unlink()
    r = resolved(repo, "base", "kind-v1")
    got = dict(zip(r.keys.to_pylist(), r.labels.to_pylist()))
    assert got == {"1": "b", "3": "a", "4": "c"}
    assert got == {k: v for k, v in expected_labels(tasks).items() if v is not None}
    assert r.summary()["tied"] == 1
    assert [p.code for p in r.problems] == ["BE861"]


def test_reuse_maps_exact_and_coarse_newer_wins_splits_need_relabeling(repo):
    table = items_table()
    r = resolved(repo, "v2", "kind-v2")
    got = dict(zip(r.keys.to_pylist(), r.labels.to_pylist()))
    own = expected_labels(v2_tasks(table))
    old = expected_labels(v1_tasks(table))
    relabel = {}
    for k, v in old.items():
        if k not in own and v == "b":
            relabel[v] = relabel.get(v, 0) + 1
    assert got == expected_v2(table)
    s = r.summary()
    assert s["relabel"] == {"kind-v1": relabel} and s["needs_relabel"] == sum(relabel.values())
    assert set(s["reused_by_mapping"]["kind-v1"]) == {"exact", "broad"}
    overlap = [k for k in own if k in old and old[k] != own[k]]
    assert overlap and all(got[k] == own[k] for k in overlap)  # newer annotations win
    warning = next(p for p in r.problems if p.code == "BE860")
    assert warning.severity.value == "warning"
    assert f"need relabeling: their class has no single automatic mapping into kind v2 (b " \
        f"{relabel['b']} (several targets))" in warning.message


def test_ambiguous_refuse_makes_relabeling_an_error(tmp_path):
    root = make_label_repo(tmp_path, envs={"v2": V2.replace(
        "mapping: data/v1-to-v2.sssom.tsv}", "mapping: data/v1-to-v2.sssom.tsv, "
        "ambiguous: refuse}")})
    assert lock(root)[0] == 0
    code, _, err = invoke_cli(["build", "tagger", "--env", "v2", "--no-register"], root)
    assert code == 1
    assert f"{loc(root, 'v2', '{labels: kind-v1')}: error[BE860]: label set 'kind-v2': " in err
    assert not (root / "dist").exists()


def test_sssom_decisions():
    text = ("subject_id\tpredicate_id\tobject_id\n"
            "o:same\tskos:exactMatch\tn:same\n"
            "o:fine\tskos:broadMatch\tn:coarse\n"
            "o:split\tskos:narrowMatch\tn:part\n"
            "o:near\tskos:closeMatch\tn:same\n"
            "o:two\tskos:exactMatch\tn:same\n"
            "o:two\tskos:exactMatch\tn:coarse\n")
    rows = parse_sssom(text.encode(), "m.tsv")
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    got = decide(rows, ["same", "fine", "split", "near", "two", "lost"],
                 ["same", "coarse", "part"], "m.tsv", "old", "new")
    assert {c: (d.kind, d.target) for c, d in got.items()} == {
        "same": ("exact", "same"), "fine": ("broad", "coarse"), "split": ("split", None),
        "near": ("close", None), "two": ("several", None), "lost": ("unmapped", None)}


# --- the Label Studio reader -------------------------------------------------------------------

def test_streaming_parse_does_not_depend_on_chunk_boundaries():
    tasks = v1_tasks(items_table(60))
    tasks[4]["data"]["text"] = "naïve café — 東京"  # multibyte characters across boundaries
    data = ("\ufeff" + export(tasks)).encode("utf-8")
    whole = read_label_studio([data], key="item_id", field="kind", ui_version="1", display="x")
    for size in (1, 2, 3, 7, 64, 1000):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        part = read_label_studio(chunks, key="item_id", field="kind", ui_version="1",
                                 display="x")
        assert part.keys.equals(whole.keys) and part.labels.equals(whole.labels)
        assert part.lines.tolist() == whole.lines.tolist()
        assert (part.cancelled, part.tasks) == (whole.cancelled, whole.tasks)
    first_lines = {t["data"]["item_id"]: i + 2 for i, t in enumerate(tasks)}
    assert whole.lines.tolist() == [first_lines[int(k)] for k in whole.keys.to_pylist()]
    broken = data.replace(b'"annotations"', b'"annotations" :: ', 1)
    with pytest.raises(ExportError, match=r"^x:2: invalid JSON"):
        read_label_studio([broken[i:i + 5] for i in range(0, len(broken), 5)], key="item_id",
                          field="kind", ui_version="1", display="x")


def test_completed_by_may_be_an_object_and_keys_text_or_integers():
    tasks = [{"id": 1, "data": {"item_id": "7"}, "annotations": [
                annotation(1, {"id": 42, "email": "a@b"}, "a")]},
             {"id": 2, "data": {"item_id": 8.0}, "annotations": [
                 annotation(2, {"email": "c@d"}, "b")]}]
    ann = read_label_studio([export(tasks).encode()], key="item_id", field="kind",
                            ui_version=None, display="x")
    assert ann.keys.to_pylist() == ["7", "8"]
    assert ann.annotators.to_pylist() == ["42", "c@d"]
    assert ann.ui_versions.null_count == 2


# --- the Parquet form --------------------------------------------------------------------------

def parquet_labels(rows: list[tuple]) -> pa.Table:
    key, label, who, ui, tax, when = zip(*rows)
    return pa.table({"key": pa.array(key, pa.int64()), "label": pa.array(label, pa.string()),
                     "annotator": pa.array(who, pa.string()), "ui_version": list(ui),
                     "taxonomy_version": list(tax),
                     "created_at": pa.array(when, pa.timestamp("us", tz="UTC"))})


PARQUET_ENV = BASE.replace("uri: data/kind-v1.json\n    format: label-studio",
                           "uri: data/kind.parquet\n    format: parquet")


def test_the_parquet_form(tmp_path):
    rows = [(1, "a", "u1", "1", "1", 1), (1, "a", "u2", "1", "1", 2), (2, "b", "u1", "1", "1", 3),
            (2, None, "u2", "1", "1", 4), (3, "c", "u1", None, "1", 5)]
    root = make_label_repo(tmp_path, envs={"base": PARQUET_ENV, "v2": None})
    pq.write_table(parquet_labels(rows), root / "data/kind.parquet")
    assert lock(root)[0] == 0
    locked = read_lock(Project.discover(root), "base").labels["kind-v1"]
    assert (locked.examples, locked.annotations, locked.annotators) == (3, 4, 2)
    r = resolved(root, "base", "kind-v1")
    assert dict(zip(r.keys.to_pylist(), r.labels.to_pylist())) == {"1": "a", "2": "b", "3": "c"}
    bad = rows + [(4, "a", "u1", "1", "2", 6)]
    pq.write_table(parquet_labels(bad), root / "data/kind.parquet")
    code, _, err = lock(root)
    assert code == 1
    assert (f"{loc(root, 'base', 'uri: data/kind.parquet')}: error[BE856]: label set 'kind-v1': "
            "data/kind.parquet: row 6 (and 0 more) were made under taxonomy version '2', not "
            "'1'") in err
    pq.write_table(pa.table({"key": [1], "label": ["a"]}), root / "data/kind.parquet")
    code, _, err = lock(root)
    assert code == 1 and "error[BE855]" in err and "missing column(s) annotator" in err


# --- agreement ---------------------------------------------------------------------------------

def test_fleiss_kappa_matches_the_worked_example():
    """Fleiss (1971) as in the usual worked example: 10 subjects, 14 raters, 5 classes."""
    from buildenv.labels.agreement import fleiss_kappa

    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    item = np.array([i for i, row in enumerate(table) for j, n in enumerate(row)
                     for _ in range(n)])
    label = np.array([j for row in table for j, n in enumerate(row) for _ in range(n)])
    kappa, used = fleiss_kappa(item, label, 5)
    assert used == 10 and kappa == pytest.approx(0.2099, abs=1e-4)


def test_cohen_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    from buildenv.labels.agreement import cohen_kappa

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 300)
    a = np.where(rng.random(300) < 0.8, truth, rng.integers(0, 4, 300))
    b = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 4, 300))
    item = np.concatenate([np.arange(300), np.arange(300)])
    rater = np.concatenate([np.zeros(300, int), np.ones(300, int)])
    kappa, pairs = cohen_kappa(item, rater, np.concatenate([a, b]), 4)
    assert pairs == 1 and kappa == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


# --- the labels command, show/diff, drift ------------------------------------------------------

def test_labels_command(repo):
    assert lock(repo)[0] == 0
    code, out, err = invoke_cli(["labels", "v2", "--format", "json"], repo)
    assert code == 0, err
    report = json.loads(out)
    sets = {s["name"]: s for s in report["label_sets"]}
    v1, v2 = sets["kind-v1"], sets["kind-v2"]
    tasks = v1_tasks(items_table())
    kept = [a for t in tasks for a in t["annotations"] if not a["was_cancelled"]]
    assert (v1["examples"], v1["annotations"], v1["annotators"]) == (len(tasks), len(kept), 3)
    assert v1["cancelled"] == sum(a["was_cancelled"] for t in tasks for a in t["annotations"])
    assert v1["per_annotator"] == {str(w): sum(1 for a in kept if a["completed_by"] == w)
                                   for w in (1, 2, 3)}
    assert v1["per_ui_version"] == {"1": len(kept)}
    assert v1["agreement"]["pairs"] == 3 and 0 < v1["agreement"]["fleiss_kappa"] < 1
    assert v2["label"] and v2["agreement"]["examples"] == 0
    assert v2["resolved"]["from_reuse"] == sum(v2["resolved"]["reused"].values()) > 0
    assert v2["resolved"]["needs_relabel"] == v2["resolved"]["relabel"]["kind-v1"]["b"]
    assert sum(v2["resolved"]["per_class"].values()) == v2["resolved"]["examples"]
    code, text, err = invoke_cli(["labels", "v2"], repo)
    assert code == 0
    assert f"need relabeling (from kind-v1): b {v2['resolved']['needs_relabel']}" in text
    assert "agreement: Fleiss' kappa" in text and "warning[BE860]" in err


def test_show_explain_and_diff_show_label_sets_like_datasets(repo):
    code, out, _ = invoke_cli(["show", "v2", "--explain"], repo)
    assert code == 0
    line = yaml_line(env_path(repo, "v2"), "uri: data/kind-v2.json")[0]
    assert f"    uri: data/kind-v2.json  # environments/v2.yaml:{line}" in out.splitlines()
    base_line = yaml_line(env_path(repo, "base"), "uri: data/kind-v1.json")[0]
    assert f"    uri: data/kind-v1.json  # environments/base.yaml:{base_line}" in out.splitlines()
    code, out, _ = invoke_cli(["diff", "base", "v2"], repo)
    lines = out.splitlines()
    assert '~ label.labels: "kind-v1" -> "kind-v2"' in lines
    assert '+ labels.kind-v2.uri: "data/kind-v2.json"' in lines
    assert '+ labels.kind-v2.taxonomy.classes: ["a", "b1", "b2", "cd"]' in lines


def test_drift_of_label_distributions(repo):
    assert lock(repo)[0] == 0
    code, out, err = invoke_cli(["drift", "v2", "--labels", "kind-v1", "--against-labels",
                                 "kind-v2", "--format", "json"], repo)
    assert code == 1, err
    payload = json.loads(out)
    stats = json.loads((repo / payload["statistics"]).read_text())
    column = stats["columns"]["kind"]
    table = items_table()
    v1 = [v for v in expected_labels(v1_tasks(table)).values() if v is not None]
    v2 = list(expected_v2(table).values())
    assert {v["value"]: v["count"] for v in column["baseline"]["values"]} == {
        c: v1.count(c) for c in set(v1)}
    assert {v["value"]: v["count"] for v in column["candidate"]["values"]} == {
        c: v2.count(c) for c in set(v2)}
    classes = set(v1) | set(v2)
    linf = max(abs(v1.count(c) / len(v1) - v2.count(c) / len(v2)) for c in classes)
    assert column["metrics"]["linf"] == pytest.approx(linf, abs=1e-12)
    alert = payload["alerts"][0]
    assert (alert["code"], alert["statistic"]) == ("BE601", "linf")
    assert alert["location"].startswith("environments/base.yaml:")  # kind-v1's taxonomy
    code, out, err = invoke_cli(["drift", "v2", "--labels", "kind-v2", "--against-lock", "v2"],
                                repo)
    assert code == 0, err  # the same version: no drift
    code, _, err = invoke_cli(["drift", "v2", "--labels", "nope", "--against-lock", "base"], repo)
    assert code == 2 and "error[BE851]: unknown label set 'nope'" in err


def expected_v2(table) -> dict[str, str]:
    """kind-v2's labels by the documented rules, computed from the task lists."""
    own = expected_labels(v2_tasks(table))
    want = {k: v for k, v in own.items() if v is not None}
    for k, v in expected_labels(v1_tasks(table)).items():
        if k not in own and v in ("a", "c"):
            want[k] = {"a": "a", "c": "cd"}[v]
    return want


def test_concurrent_locks_agree(repo):
    """Several `buildenv lock` processes at once: every one succeeds and the lock they leave
    is the one a single process writes."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_ROOT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "buildenv", "lock"], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    together = {n: (repo / "environments" / f"{n}.lock.json").read_bytes() for n in ("base", "v2")}
    for n in together:
        (repo / "environments" / f"{n}.lock.json").unlink()
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(repo / ".buildenv", ignore_errors=True)
    assert lock(repo)[0] == 0
    assert together == {n: (repo / "environments" / f"{n}.lock.json").read_bytes()
                        for n in together}
