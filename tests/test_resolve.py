"""`extends` semantics (SPEC §2): mappings merge, lists and scalars replace, `null` deletes.

Plus provenance (`buildenv show --explain`), `buildenv diff`, deep chains, many children of one
parent, and the resolved-environment digest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BASE_YAML, invoke_cli, write_repo

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse

GRAND = """\
name: grand
extends: child
description: third level
serving:
  ops: [sklearn.linear_model.LogisticRegression]
label: null
"""

GREAT = """\
name: great
extends: grand
datasets:
  movies:
    columns:
      critic_score: null
      budget: {dtype: float64, range: [0, 500]}
  ratings:
    uri: data/ratings-v2.parquet
privacy:
  min_group_size: 25
"""


def resolve(root: Path, name: str):
    return Multiverse(Project.discover(root)).resolve(name)


def show_json(root: Path, name: str) -> dict:
    code, out, err = invoke_cli(["show", name, "--format", "json"], root)
    assert (code, err) == (0, ""), err
    return json.loads(out)


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    """base -> child -> grand -> great (four levels)."""
    return write_repo(tmp_path, envs={"grand": GRAND, "great": GREAT})


def test_child_inherits_everything_it_does_not_write(repo):
    base, child = show_json(repo, "base"), show_json(repo, "child")
    assert child["datasets"]["movies"]["uri"] == "data/movies-v2.parquet"
    assert base["datasets"]["movies"]["uri"] == "data/movies.parquet"
    child["datasets"]["movies"]["uri"] = base["datasets"]["movies"]["uri"]
    child.pop("name"), base.pop("name"), child.pop("extends")
    assert child == base


def test_mappings_merge_key_by_key(tmp_path):
    root = write_repo(tmp_path, envs={"child": (
        "name: child\nextends: base\ndatasets:\n  movies:\n    columns:\n"
        "      critic_score: {serving: true}\n      new_col: {dtype: int32}\n")})
    res = resolve(root, "child")
    cols = res.env.datasets["movies"].columns
    assert list(cols) == ["movie_id", "genre", "runtime_minutes", "critic_score", "new_col"]
    # only `serving` changed; dtype and range are the parent's
    assert cols["critic_score"].serving is True
    assert cols["critic_score"].dtype == "float64"
    assert cols["critic_score"].range == (0, 100)
    assert cols["new_col"].dtype == "int32"
    assert res.env.datasets["movies"].uri == "data/movies.parquet"
    assert set(res.env.datasets) == {"movies", "ratings"}


def test_lists_replace(tmp_path):
    root = write_repo(tmp_path, envs={"child": (
        "name: child\nextends: base\nserving:\n  ops: [sklearn.tree.*]\n"
        "datasets:\n  movies:\n    columns:\n      genre: {domain: [western]}\n")})
    env = resolve(root, "child").env
    assert env.serving.ops == ["sklearn.tree.*"]
    assert env.serving.requirements == ["scikit-learn>=1.6,<2"]  # sibling key kept
    assert env.datasets["movies"].columns["genre"].domain == ["western"]


def test_scalars_replace(tmp_path):
    root = write_repo(tmp_path, envs={"child": (
        "name: child\nextends: base\ndescription: mine\n"
        "datasets:\n  movies:\n    columns:\n      movie_id: {nullable: true}\n")})
    env = resolve(root, "child").env
    assert env.description == "mine"
    assert env.datasets["movies"].columns["movie_id"].nullable is True
    assert resolve(root, "base").env.datasets["movies"].columns["movie_id"].nullable is False


def test_null_deletes_inherited_keys(tmp_path):
    root = write_repo(tmp_path, envs={"child": (
        "name: child\nextends: base\nlabel: null\nmonitoring:\n  drift:\n    columns:\n"
        "      genre: null\n"
        "datasets:\n  movies:\n    columns:\n      critic_score: null\n"
        "      runtime_minutes: {range: null}\n  ratings: null\n"
        "privacy: {restricted: null}\n")})
    env = resolve(root, "child").env
    assert env.label is None
    assert env.monitoring.drift.columns == {}
    assert "critic_score" not in env.datasets["movies"].columns
    assert env.datasets["movies"].columns["runtime_minutes"].range is None
    assert list(env.datasets) == ["movies"]
    assert env.privacy.restricted == []  # back to the default


def test_null_for_a_key_the_parent_lacks_is_a_no_op(tmp_path):
    root = write_repo(tmp_path, envs={"child": "name: child\nextends: base\npromotion: null\n"})
    assert resolve(root, "child").env.promotion is None


def test_scalar_over_mapping_is_a_type_error(tmp_path):
    root = write_repo(tmp_path, envs={"child": "name: child\nextends: base\nserving: sklearn\n"})
    code, _, err = invoke_cli(["show", "child"], root)
    assert code == 2
    assert err.splitlines()[0].startswith("environments/child.yaml:3:1: error[BE004]: serving:")


def test_depth_four_chain(deep):
    res = resolve(deep, "great")
    assert res.chain == ["base", "child", "grand", "great"]
    env = res.env
    assert env.name == "great" and env.extends == "grand"
    assert env.description == "third level"                               # from grand
    assert env.datasets["movies"].uri == "data/movies-v2.parquet"         # from child
    assert env.datasets["ratings"].uri == "data/ratings-v2.parquet"       # from great
    assert env.serving.ops == ["sklearn.linear_model.LogisticRegression"]  # from grand
    assert env.serving.stack == "sklearn"                                 # from base
    assert env.label is None                                              # deleted by grand
    assert list(env.datasets["movies"].columns) == [
        "movie_id", "genre", "runtime_minutes", "budget"]
    assert env.privacy.restricted == ["ratings"] and env.privacy.min_group_size == 25
    # each level is its own branch: ancestors are untouched
    assert resolve(deep, "grand").env.privacy.min_group_size == 10
    assert resolve(deep, "child").env.label is not None


def test_many_children_of_one_parent(tmp_path):
    children = {f"branch{i}": (f"name: branch{i}\nextends: base\n"
                               f"datasets:\n  movies:\n    uri: data/m{i}.parquet\n"
                               f"serving:\n  ops: [op{i}.*]\n")
                for i in range(6)}
    root = write_repo(tmp_path, envs=children)
    multiverse = Multiverse(Project.discover(root))
    assert multiverse.children("base") == ["branch0", "branch1", "branch2", "branch3", "branch4",
                                   "branch5", "child"]
    for i in range(6):
        env = multiverse.resolve(f"branch{i}").env
        assert env.datasets["movies"].uri == f"data/m{i}.parquet"
        assert env.serving.ops == [f"op{i}.*"]
    # copy-on-write: no child's overlay leaked into the shared parent or a sibling
    base = multiverse.resolve("base").env
    assert base.datasets["movies"].uri == "data/movies.parquet"
    assert base.serving.ops[0] == "sklearn.pipeline.Pipeline"
    assert Multiverse(Project.discover(root)).resolve("base").digest == multiverse.resolve("base").digest


def test_resolve_all_reports_every_broken_environment(tmp_path):
    root = write_repo(tmp_path, envs={"bad1": "name: bad1\nextends: base\nfoo: 1\n",
                                      "bad2": "name: bad2\nextends: nope\n"})
    resolved, problems = Multiverse(Project.discover(root)).resolve_all()
    assert sorted(resolved) == ["base", "child"]
    assert [(p.path, p.line, p.code) for p in problems] == [
        ("environments/bad1.yaml", 3, "BE003"), ("environments/bad2.yaml", 2, "BE007")]


def test_digest_ignores_cosmetic_fields_only(tmp_path):
    root = write_repo(tmp_path, envs={
        "cosmetic": "name: cosmetic\nextends: base\ndescription: other words\n"
                    "datasets:\n  movies:\n    description: d\n    columns:\n"
                    "      genre: {description: g}\n",
        "real": "name: real\nextends: base\ndatasets:\n  movies:\n    columns:\n"
                "      genre: {serving: false}\n"})
    digests = {n: resolve(root, n).digest for n in ("base", "cosmetic", "real", "child")}
    assert digests["cosmetic"] == digests["base"]
    assert digests["real"] != digests["base"]
    assert digests["child"] != digests["base"]
    assert all(d.startswith("sha256:") and len(d) == 71 for d in digests.values())


def test_golden_environment_digests(repo):
    """The canonical form of a resolved environment is a contract: every lock and build cache
    key depends on it. If this fails, the change invalidates users' locks: say so in
    CHANGELOG.md, then update the digests."""
    assert resolve(repo, "base").digest == (
        "sha256:73b8359539f2c2c9b9815d60ff2e7a27840b61957684a793ea7689fc664ee351")
    assert resolve(repo, "child").digest == (
        "sha256:d7e0d841ae46ddadeb2d18f6a278e931d4b6499816dcf1ca72bb6b1befd70262")


def test_writing_a_default_does_not_change_the_digest(repo, tmp_path):
    """Defaults are not part of the canonical form: an optional key added to the format later
    leaves the digest (and every lock) of environments that do not use it unchanged."""
    explicit = write_repo(tmp_path / "explicit", envs={"child": (
        "name: child\nextends: base\ndatasets:\n  movies:\n    uri: data/movies-v2.parquet\n"
        "    columns:\n      genre: {serving: true}\n      runtime_minutes: {nullable: true}\n"
        "monitoring: {min_importance: 0.0}\nevaluation: {join: {}}\n")})
    assert resolve(explicit, "child").digest == resolve(repo, "child").digest


# --- show --explain -------------------------------------------------------------------------

def test_show_explain_names_the_file_of_each_value(deep):
    code, out, err = invoke_cli(["show", "great", "--explain"], deep)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "# great: resolved from base -> child -> grand -> great"
    for expected in [
        "schema: 1  # environments/base.yaml:1",
        "name: great  # environments/great.yaml:1",
        "description: third level  # environments/grand.yaml:3",
        "    uri: data/movies-v2.parquet  # environments/child.yaml:5",
        "    format: parquet  # environments/base.yaml:7",
        "        range: [1, 600]  # environments/base.yaml:11",
        "      budget:  # environments/great.yaml:7",
        "        range: [0, 500]  # environments/great.yaml:7",
        "    uri: data/ratings-v2.parquet  # environments/great.yaml:9",
        "  stack: sklearn  # environments/base.yaml:20",
        "  ops: [sklearn.linear_model.LogisticRegression]  # environments/grand.yaml:5",
        "  min_group_size: 25  # environments/great.yaml:11",
        "extends: grand  # environments/great.yaml:2",
    ]:
        assert expected in lines, expected
    # deleted values are gone, not attributed
    assert not any(line.lstrip().startswith(("critic_score:", "label:")) for line in lines)


def test_show_yaml_and_json_agree(repo):
    import yaml

    code, out, err = invoke_cli(["show", "child"], repo)
    assert (code, err) == (0, "")
    assert yaml.safe_load(out) == show_json(repo, "child")
    doc = yaml.safe_load(out)
    assert doc["extends"] == "base"
    assert doc["datasets"]["movies"]["columns"]["runtime_minutes"]["nullable"] is True  # default


# --- diff ----------------------------------------------------------------------------------------

def test_diff_lists_every_difference(deep):
    code, out, err = invoke_cli(["diff", "base", "grand"], deep)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "--- base",
        "+++ grand",
        '~ description: "The root environment of the test repo." -> "third level"',
        '~ datasets.movies.uri: "data/movies.parquet" -> "data/movies-v2.parquet"',
        '- label.dataset: "ratings"',
        '- label.column: "liked"',
        "- label.classes: [false, true]",
        '~ serving.ops: ["sklearn.pipeline.Pipeline", "sklearn.preprocessing.*", '
        '"sklearn.linear_model.*"] -> ["sklearn.linear_model.LogisticRegression"]',
    ]


def test_diff_additions_and_json(deep):
    code, out, err = invoke_cli(["diff", "grand", "great", "--format", "json"], deep)
    assert (code, err) == (0, "")
    payload = json.loads(out)
    assert (payload["a"], payload["b"]) == ("grand", "great")
    by_path = {c["path"]: c for c in payload["changes"]}
    assert by_path["datasets.movies.columns.budget.dtype"] == {
        "path": "datasets.movies.columns.budget.dtype", "kind": "added", "b": "float64"}
    assert by_path["datasets.movies.columns.critic_score.serving"] == {
        "path": "datasets.movies.columns.critic_score.serving", "kind": "removed", "a": False}
    assert by_path["datasets.ratings.uri"]["kind"] == "changed"
    assert by_path["privacy.min_group_size"] == {"path": "privacy.min_group_size",
                                                 "kind": "changed", "a": 10, "b": 25}


def test_diff_of_identical_environments(repo):
    code, out, err = invoke_cli(["diff", "base", "base"], repo)
    assert (code, out, err) == (0, "base and base resolve to the same environment\n", "")


def test_diff_unknown_environment(repo):
    code, out, err = invoke_cli(["diff", "base", "nope"], repo)
    assert code == 2
    assert err.splitlines()[0] == "buildenv: error[BE014]: unknown environment 'nope'"


def test_base_yaml_line_numbers_are_what_tests_pin():
    """Other tests pin base.yaml positions: keep conftest.BASE_YAML's layout."""
    lines = BASE_YAML.splitlines()
    assert lines[10].startswith("      runtime_minutes:")   # line 11
    assert lines[19] == "  stack: sklearn"                  # line 20
    assert lines[25].startswith("      genre:")             # line 26
    assert lines[27] == "  restricted: [ratings]"           # line 28


# --- privacy is monotonic across extends ------------------------------------------------------

@pytest.mark.parametrize("privacy, line, message", [
    ("privacy:\n  restricted: []\n", 4,
     "privacy.restricted: dataset 'ratings' is restricted in base and must stay restricted in "
     "loose (an environment may tighten its parent's privacy, never loosen it)"),
    ("privacy:\n  min_group_size: 3\n", 4,
     "privacy.min_group_size 3 is smaller than 10 in base: privacy may be tightened, not "
     "loosened"),
])
def test_a_child_cannot_loosen_privacy(tmp_path, privacy, line, message):
    root = write_repo(tmp_path, envs={"loose": f"name: loose\nextends: base\n{privacy}"})
    code, out, err = invoke_cli(["show", "loose"], root)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == f"environments/loose.yaml:{line}:3: error[BE019]: {message}"
    assert "Traceback" not in err


def test_a_child_may_tighten_privacy(tmp_path):
    root = write_repo(tmp_path, envs={"tight": (
        "name: tight\nextends: base\nprivacy:\n  restricted: [ratings, movies]\n"
        "  min_group_size: 50\n")})
    env = resolve(root, "tight").env
    assert env.privacy.restricted == ["ratings", "movies"] and env.privacy.min_group_size == 50


def test_deleting_a_restricted_dataset_is_not_loosening(tmp_path):
    root = write_repo(tmp_path, envs={"slim": (
        "name: slim\nextends: base\ndatasets:\n  ratings: null\nprivacy:\n  restricted: []\n"
        "label: null\n")})
    assert resolve(root, "slim").env.privacy.restricted == []
