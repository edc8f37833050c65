"""The lock shows no count of what user code made from restricted data (docs/privacy.md).

The attack: a designer who may not see a row of a restricted dataset writes a labeling function
that votes only on one planted row when one of its values passes a threshold (and a transform
that keeps only that row then), relocks, and reads in the lock -- or in what the commands print
-- whether a label set got 0 or 1 example, or an output 0 or 1 row. Two repositories with the
same restricted data and code that differs only in the threshold (the planted row passes in one,
not in the other) must show the same everything: the output of lock, lock --check, labels (text
and JSON), validate, envs and show --explain, and the lock file, apart from digests (of the
code, and of the outputs: a known limit, docs/privacy.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from test_labels_privacy import run

pytestmark = pytest.mark.slow

ENV = """\
name: people
datasets:
  people:
    uri: data/people.parquet
    columns:
      person_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
  picked:
    source:
      transform: transforms/pick.py:pick
      inputs: [people]
    columns:
      person_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
labels:
  probe:
    dataset: people
    key: person_id
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    source:
      functions: rules/probe.py
label: {dataset: people, column: x}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.*]
privacy:
  restricted: [people]
  min_group_size: 10
"""

PLANTED, VALUE = 7, 5.0  # the row the designer asks about, and its restricted value

TRANSFORM = '''\
def pick(ctx):
    df = ctx.read("people", columns=["person_id", "x"])
    return df[(df["person_id"] == 7) & (df["x"] > THRESHOLD)]
'''

RULES = '''\
import numpy as np

import buildenv


@buildenv.labeling_function(columns=["person_id", "x"])
def probe(batch):
    return np.where((batch["person_id"] == 7) & (batch["x"] > THRESHOLD), "pos", None)
'''

DIGEST = re.compile(r"(sha256|blake3):[0-9a-f]{8,64}")
# a progress line is shown only for work past a second, with its time: left out (what it names
# -- a transform's files, function-file pairs -- is the same in both)
PROGRESS = re.compile(r"^[^\n]*: (started|done in [^\n]*)\n", re.MULTILINE)


def make(root: Path, threshold: float) -> Path:
    for folder in ("environments", "data", "transforms", "rules"):
        (root / folder).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    (root / "environments/people.yaml").write_text(ENV)
    (root / "transforms/pick.py").write_text(TRANSFORM.replace("THRESHOLD", repr(threshold)))
    (root / "rules/probe.py").write_text(RULES.replace("THRESHOLD", repr(threshold)))
    n = 200
    x = np.round(np.random.default_rng(3).normal(size=n), 3)
    x[PLANTED] = VALUE
    pq.write_table(pa.table({"person_id": pa.array(np.arange(n), pa.int64()),
                             "x": pa.array(x)}), root / "data/people.parquet")
    return root


def seen(root: Path) -> list[str]:
    """What the designer sees: every command's exit code and output, then the lock file;
    digests (which differ with the code) and the repository's place left out."""
    out: list[str] = []
    for args in (["lock"], ["lock", "--check"], ["labels", "people"],
                 ["labels", "people", "--format", "json"], ["validate", "people"], ["envs"],
                 ["show", "people", "--explain"]):
        code = run(root, out, *args)[0]
        out[-1] += f"\n-> {code}"
    out.append((root / "environments/people.lock.json").read_text())
    return [PROGRESS.sub("", DIGEST.sub("<digest>", text.replace(str(root), "<root>")))
            for text in out]


def test_a_relock_does_not_say_whether_a_planted_row_passed_the_code(tmp_path):
    matched = make(tmp_path / "a", VALUE - 1)  # the planted row passes: 1 example, 1 row
    missed = make(tmp_path / "b", VALUE + 1)  # it does not: 0 and 0
    first, second = seen(matched), seen(missed)
    assert all(text.endswith("-> 0") for text in first[:-1]), first
    for a, b in zip(first, second, strict=True):
        assert a == b, f"{a}\n---- differs from ----\n{b}"

    # the outputs do differ (the test asks a real question), and the lock pins them by digest
    lock_a = json.loads((matched / "environments/people.lock.json").read_text())
    lock_b = json.loads((missed / "environments/people.lock.json").read_text())
    assert lock_a["labels"]["probe"]["digest"] != lock_b["labels"]["probe"]["digest"]
    assert lock_a["datasets"]["picked"]["digest"] != lock_b["datasets"]["picked"]["digest"]
    for entry, counts in ((lock_a["labels"]["probe"], ("size", "examples", "annotations",
                                                       "annotators")),
                          (lock_a["datasets"]["picked"], ("size", "rows"))):
        assert {k: entry[k] for k in counts} == dict.fromkeys(counts)
        assert entry["counts_withheld"] == "computed by user code over restricted data"
    # the plain restricted dataset keeps its counts: nothing user code made
    assert lock_a["datasets"]["people"]["rows"] == 200

    # a lock written before (with the counts) is read, and a relock writes it without them
    assert lock_a["lock_version"] == 4  # a version 3 reader would call the nulls broken
    path = matched / "environments/people.lock.json"
    old = {**json.loads(path.read_text()), "lock_version": 3}
    for entry, counts in ((old["labels"]["probe"], {"size": 1754, "examples": 1,
                                                    "annotations": 1, "annotators": 1}),
                          (old["datasets"]["picked"], {"size": 1520, "rows": 1})):
        del entry["counts_withheld"]
        entry.update(counts)
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    code, out, err = invoke_cli(["lock", "--check"], matched)
    assert code == 0, out + err
    code, out, err = invoke_cli(["lock"], matched)
    assert code == 0 and "people: updated" in out, out + err
    assert json.loads(path.read_text()) == lock_a


def test_a_build_on_labels_computed_over_restricted_data_withholds_their_resolution(tmp_path):
    """The build's lineage (and so its card) holds no exact count of such a label set either:
    how many examples got a label, per class, and the training rows."""
    from labelrepo import make_label_repo

    weak = ("name: weak\nextends: base\nlabels:\n  kind-rules:\n    dataset: items\n"
            "    key: item_id\n    taxonomy: {name: kind, version: 1, classes: [a, b, c]}\n"
            "    source:\n      functions: rules.py\nlabel: {labels: kind-rules}\n"
            "privacy:\n  restricted: [items]\n")
    rules = ('import numpy as np\nimport buildenv\n\n\n'
             '@buildenv.labeling_function(columns=["x1"])\ndef by_x1(batch):\n'
             '    return np.where(batch["x1"] > 0.3, "a", '
             'np.where(batch["x1"] < -0.3, "b", "c"))\n')
    root = make_label_repo(tmp_path / "repo", envs={"weak": weak}, files={"rules.py": rules})
    code, out, err = invoke_cli(["lock", "weak"], root)
    assert code == 0 and "(counts of 1 withheld)" in out, out + err
    code, out, err = invoke_cli(["build", "tagger", "--env", "weak", "--no-register"], root)
    assert code == 0, err
    entry = json.loads((root / "dist/tagger/weak/buildenv.json").read_text())["labels"]
    assert entry["kind-rules"]["resolution"] == {
        "label_set": "kind-rules", "counts_withheld": "computed by user code over restricted data"}
    assert {k: entry["kind-rules"][k] for k in ("examples", "annotations", "annotators")} == \
        dict.fromkeys(("examples", "annotations", "annotators"))
    assert entry["kind-v1"]["examples"] == 180  # an annotated set keeps its counts


def test_drift_of_labels_computed_over_restricted_data_is_refused_without_a_count(tmp_path):
    """`drift --labels` would show the computed set's exact totals and class counts (1 row or
    0): it is refused (BE888, exit 2) before anything is read, the same for both runs."""
    said = []
    for name, threshold in (("a", VALUE - 1), ("b", VALUE + 1)):
        root = make(tmp_path / name, threshold)
        assert invoke_cli(["lock"], root)[0] == 0
        code, out, err = invoke_cli(["drift", "people", "--labels", "probe",
                                     "--against-labels", "probe"], root)
        assert code == 2 and "BE888" in err, out + err
        said.append(PROGRESS.sub("", DIGEST.sub("<digest>", (out + err).replace(str(root),
                                                                                  "<root>"))))
        assert not list((root / ".buildenv").glob("drift/**/*.json"))
    assert said[0] == said[1]


def test_a_label_set_reusing_a_computed_restricted_set_counts_as_one():
    """Every place that withholds such counts (`labels`, the build's lineage, `drift`) asks
    one question, and a set that reuses the computed one answers it too: its resolved labels
    hold the functions' output."""
    import yaml

    from buildenv.env.spec import Environment

    data = yaml.safe_load(ENV)
    data["labels"]["human"] = {
        "uri": "labels/human.parquet", "format": "parquet", "dataset": "people",
        "key": "person_id", "taxonomy": {"name": "sign", "version": 1, "classes": ["neg", "pos"]},
        "reuse": [{"labels": "probe"}]}
    env = Environment.model_validate(data)
    assert env.computed_over_restricted("probe") == "probe"
    assert env.computed_over_restricted("human") == "probe"
    data["privacy"]["restricted"] = []
    assert Environment.model_validate(data).computed_over_restricted("human") is None


PARTITIONED = """\
name: shards
datasets:
  people:
    uri: data/people/
    partitions: []
    columns:
      person_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
  planted:
    source:
      transform: transforms/plant.py:plant
      inputs: [people]
    columns:
      person_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
  again:  # made from the planted output, one file at a time: its manifest is handed over
    source:
      transform: transforms/plant.py:again
      inputs: [planted]
    columns:
      person_id: {dtype: int64, nullable: false}
      x: {dtype: float64}
privacy:
  restricted: [people]
"""

SENTINEL_ROWS = 7919  # the count a designer plants in one output file, to read it back

PLANT = '''\
import pandas as pd


def plant(ctx):
    df = ctx.read("people", columns=["person_id", "x"])
    if ctx.file == "b.parquet":  # as many rows as a secret value: the channel
        return pd.DataFrame({"person_id": range(SECRET), "x": [float(n % 7) for n in range(SECRET)]})
    return df


def again(ctx):
    return ctx.read("planted", columns=["person_id", "x"]).head(SECRET)
'''


def _shards(root: Path, secret: int) -> Path:
    for folder in ("environments", "data/people", "transforms"):
        (root / folder).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    (root / "environments/shards.yaml").write_text(PARTITIONED)
    (root / "transforms/plant.py").write_text(PLANT.replace("SECRET", str(secret)))
    for name, first in (("a", 0), ("b", 100)):
        pq.write_table(pa.table({"person_id": pa.array(np.arange(first, first + 100), pa.int64()),
                                 "x": pa.array(np.linspace(0, 1, 100))}),
                       root / f"data/people/{name}.parquet")
    return root


def _numbers(text: str) -> set[int]:
    """The decimal numbers in `text`, digests left out: each run of digits and commas as one
    number with thousands separators (`7,919`) and as the numbers between its commas."""
    found = set()
    for run_ in re.findall(r"\d[\d,]*", DIGEST.sub("<digest>", text)):
        parts = [p for p in run_.split(",") if p]
        found.update(int(p) for p in parts)
        found.add(int("".join(parts)))
    return found


def test_a_partitioned_restricted_output_shows_no_count_its_code_chose(tmp_path):
    """A transform over a restricted partitioned input writes SENTINEL_ROWS rows to one output
    file: neither that count nor that file's size (nor the totals) reaches the lock or what
    `lock`, `lock --check` and `validate` print; the files stay pinned by their digests, and an
    output file changed outside buildenv is found."""
    root = _shards(tmp_path / "repo", SENTINEL_ROWS)
    said: list[str] = []
    for args in (["lock"], ["lock", "--check"], ["validate", "shards"], ["envs"],
                 ["show", "shards", "--explain"], ["lock", "--format", "json"]):
        code = run(root, said, *args)[0]
        assert code == 0, said[-1]
    path = root / "environments/shards.lock.json"
    lock = json.loads(path.read_text())
    entry = lock["datasets"]["planted"]

    # what the designer planted is real: the derived output holds it (buildenv's store keeps it)
    out = root / ".buildenv" / "derived"
    files = {p.name: p for p in out.rglob("*.parquet") if "objects" not in p.parts}
    assert set(files) == {"a.parquet", "b.parquet"}, sorted(out.rglob("*"))
    assert pq.read_metadata(files["b.parquet"]).num_rows == SENTINEL_ROWS
    sizes = {p.stat().st_size for p in files.values()}
    planted = {SENTINEL_ROWS, SENTINEL_ROWS + 100, *sizes, sum(sizes)}
    for text in [*said, path.read_text()]:
        found = _numbers(text) & planted
        assert not found, f"{sorted(found)} shown in:\n{text}"

    assert entry["counts_withheld"] == "computed by user code over restricted data"
    assert (entry["size"], entry["rows"]) == (None, None)
    assert [(f["path"], f["size"], f["rows"]) for f in entry["files"]] == [
        ("a.parquet", None, None), ("b.parquet", None, None)]
    assert lock["datasets"]["people"]["rows"] == 200  # the plain input keeps its counts
    assert [(f["size"], f["rows"]) for f in lock["datasets"]["again"]["files"]] == [
        (None, None)] * 2
    assert lock["lock_version"] == 4

    # a relock keeps the bytes; the files still pin: the lock's digests are the outputs'
    assert invoke_cli(["lock"], root)[0] == 0
    assert json.loads(path.read_text()) == lock
    from buildenv.data.lock.digests import compute_digest
    from buildenv.data.storage import Location
    for f in entry["files"]:
        file = files[f["path"]]
        value = compute_digest(Location(str(file), str(file), str(file), file), "parquet",
                               "sha256")
        assert value.digest == f["digest"]

    # the digest does not depend on the withheld counts alone: another secret, another lock
    other = _shards(tmp_path / "other", SENTINEL_ROWS + 1)
    assert invoke_cli(["lock"], other)[0] == 0
    theirs = json.loads((other / "environments/shards.lock.json").read_text())
    assert theirs["datasets"]["planted"]["digest"] != entry["digest"]

    # a read is verified file by file against the lock's manifest
    from buildenv.core.project import Project
    from buildenv.data.gate.gate import Gate
    from buildenv.data.lock.lockfile import read_lock
    from buildenv.data.lock.staleness import check_lock
    from buildenv.env.resolve import Multiverse

    def read() -> int:
        multiverse = Multiverse(Project.discover(root))
        res = multiverse.resolve("shards")
        pinned = read_lock(multiverse.project, "shards")
        assert pinned is not None
        gate = Gate(multiverse.project, res.env, "test", pins=pinned.pins(),
                    manifests=pinned.manifests())
        with gate.open("planted") as opened:
            return opened.table(["person_id", "x"]).num_rows

    def checked() -> list[str]:
        multiverse = Multiverse(Project.discover(root))
        return [str(p) for p in check_lock(multiverse, multiverse.resolve("shards"))[1]]

    assert read() == SENTINEL_ROWS + 100 and checked() == []

    # an output file changed outside buildenv is found, naming the file, not a count
    target = files["b.parquet"]
    target.unlink()  # a link to the store's object: replaced, never edited in place
    pq.write_table(pa.table({"person_id": pa.array([1], pa.int64()), "x": [0.5]}), target)
    assert read() == SENTINEL_ROWS + 100  # the pinned bytes (the store's copy), not that row
    found = checked()
    assert len(found) == 1 and "BE094" in found[0] and "1 changed (b.parquet)" in found[0], found
    code, text, err = invoke_cli(["validate", "shards"], root)
    assert code == 1 and "BE051" in err and not _numbers(text + err) & planted, text + err
    # `lock --check` rebuilds it from the store, as pinned (a checkout's outputs are buildenv's)
    code, text, err = invoke_cli(["lock", "--check"], root)
    assert code == 0 and checked() == [], text + err

    # the lock's file digests are checked against its digest; a null count only where withheld
    for edit in ("digest", "counts"):
        broken = json.loads(json.dumps(lock))
        if edit == "digest":
            broken["datasets"]["planted"]["files"][1]["digest"] = entry["files"][0]["digest"]
        else:
            del broken["datasets"]["planted"]["counts_withheld"]  # the files' nulls stay
            broken["datasets"]["planted"].update(size=1, rows=1)
        path.write_text(json.dumps(broken))
        code, text, err = invoke_cli(["lock", "--check"], root)
        assert code == 2 and "BE054" in err, text + err

    # a lock written before (each file counted) is read, and a relock writes it without them
    from buildenv.data.lock.manifest import FileEntry, Manifest
    old = json.loads(json.dumps(lock))
    for name in ("planted", "again"):
        counted = Manifest(tuple(
            FileEntry(f["path"], p.stat().st_size, f["digest"], pq.read_metadata(p).num_rows)
            for f in old["datasets"][name]["files"]
            for p in [root / ".buildenv/derived/shards" / name / f["path"]]))
        del old["datasets"][name]["counts_withheld"]
        old["datasets"][name].update(digest=counted.digest, size=counted.size,
                                     rows=counted.rows, files=counted.files_json())
    old["datasets"]["again"]["derived"]["inputs"]["planted"] = \
        old["datasets"]["planted"]["digest"]
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    code, text, err = invoke_cli(["lock", "--check"], root)
    assert code == 0, text + err
    code, text, err = invoke_cli(["lock"], root)
    assert code == 0 and "shards: updated" in text, text + err
    assert json.loads(path.read_text()) == lock


def test_a_build_reading_a_partitioned_restricted_output_records_no_count_of_it(tmp_path):
    """The build's lineage, model card and every file it writes hold no count of such an
    output (the lineage takes its datasets' counts from the lock)."""
    root = _shards(tmp_path / "repo", SENTINEL_ROWS)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n'
                                         '\n[tool.buildenv.trainings.fit]\n'
                                         'entry = "train.py:train"\n')
    env = root / "environments/shards.yaml"
    env.write_text(env.read_text().replace("privacy:", "label: {dataset: people, column: x}\n"
                                           "serving:\n  stack: sklearn\n"
                                           "  ops: [sklearn.linear_model.*]\nprivacy:"))
    (root / "train.py").write_text(
        "from sklearn.linear_model import LinearRegression\n\n\ndef train(ctx):\n"
        "    ctx.read(\"planted\", columns=[\"person_id\", \"x\"])\n"
        "    df = ctx.read(\"people\", columns=[\"person_id\", \"x\"])\n"
        "    return LinearRegression().fit(df[[\"person_id\"]], df[\"x\"])\n")
    said: list[str] = []
    for args in (["lock"], ["build", "fit", "--env", "shards", "--no-register"]):
        code = run(root, said, *args)[0]
        assert code == 0, said[-1]
    out = root / ".buildenv/derived/shards/planted"
    sizes = {p.stat().st_size for p in out.glob("*.parquet")}
    planted = {SENTINEL_ROWS, SENTINEL_ROWS + 100, *sizes, sum(sizes)}
    dist = root / "dist/fit/shards"
    lineage = json.loads((dist / "buildenv.json").read_text())
    assert lineage["datasets"]["planted"]["rows"] is None
    assert "planted" in lineage["datasets"] and len(sizes) == 2
    for text in [*said] + [p.read_text(errors="replace") for p in dist.rglob("*")
                           if p.is_file() and p.suffix != ".skops"]:
        found = _numbers(PROGRESS.sub("", text)) & planted
        assert not found, f"{sorted(found)} shown in:\n{text}"


def test_a_withheld_manifest_is_pinned_by_paths_and_digests_and_others_keep_their_digest():
    """The digest of a manifest with counts is what it always was (existing locks keep their
    bytes); a withheld one's covers each file's path and digest, not its counts; a null count
    is read only where the manifest says the counts are withheld."""
    from buildenv.data.lock.manifest import FileEntry, Manifest

    def manifest(b_rows: int, b_size: int, b_digest: str = "b") -> Manifest:
        return Manifest((FileEntry("a.parquet", 1958, "sha256:" + "a" * 64, 100),
                         FileEntry("b.parquet", b_size, "sha256:" + b_digest * 64, b_rows)))

    counted = manifest(SENTINEL_ROWS, 22261)
    assert counted.digest == \
        "sha256:ffde3c418df7f3699864a912ee26ad88cde0b387326f89fefa5c0f8e5db0cff1"
    withheld = counted.withhold()
    assert withheld.withheld and not counted.withheld
    assert withheld.digest != counted.digest
    assert withheld.digest == manifest(1, 10).withhold().digest  # counts are not in it
    assert withheld.digest != manifest(SENTINEL_ROWS, 22261, "c").withhold().digest
    assert [(f["size"], f["rows"]) for f in withheld.files_json()] == [(None, None)] * 2
    with pytest.raises(ValueError, match="withheld"):
        withheld.rows  # noqa: B018 -- no total of withheld counts
    # handed to a transform's or a training's process and read back, it is the same
    assert Manifest.from_json(json.loads(json.dumps(withheld.to_json()))) == withheld
    assert "counts_withheld" not in counted.to_json()
    with pytest.raises(TypeError):
        FileEntry.from_json(withheld.files_json()[0])
    assert FileEntry.from_json(withheld.files_json()[0], withheld=True) == withheld.files[0]


def test_labels_over_an_output_computed_from_restricted_data_withhold_its_rows(tmp_path):
    """A label set over the transform's output: `labels` showed the output's exact row count
    ("coverage withheld of 1 rows"), which the lock withholds; now a count like the others
    (released by the policy: 0 or 1 row is below the minimum group size) and the shares'
    denominator."""
    over = ENV.replace("label: {dataset: people", """\
  picked_probe:
    dataset: picked
    key: person_id
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    source:
      functions: rules/probe.py
label: {dataset: people""")
    texts = []
    for root, threshold in ((tmp_path / "a", VALUE - 1), (tmp_path / "b", VALUE + 1)):
        make(root, threshold)
        (root / "environments/people.yaml").write_text(over)
        out: list[str] = []
        assert run(root, out, "lock")[0] == 0, out
        for args in (["labels", "people"], ["labels", "people", "--format", "json"]):
            run(root, out, *args)
        texts.append([DIGEST.sub("<digest>", t.replace(str(root), "<root>")) for t in out[1:]])
    assert "picked_probe" in texts[0][0] and "of withheld rows" in texts[0][0], texts[0][0]
    assert texts[0] == texts[1]
