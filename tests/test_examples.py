"""The example multiverse of this repository works as its README says.

Runs on a copy (environments/, data/, examples/, pyproject.toml in a temp dir), so the
repository is never written to.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse

ENVS = sorted(p.stem for p in (REPO_ROOT / "environments").glob("*.yaml"))
ROOT_ENV = "prod-2026-06"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example")
    for name in ("environments", "data", "examples"):
        shutil.copytree(REPO_ROOT / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".*"))
    shutil.copy2(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_multiverse_has_its_eleven_environments():
    assert ENVS == ["exp-genre-v1", "exp-genre-v2", "exp-onnx", "exp-onnx-trees", "exp-relabel",
                    "exp-stream", "exp-weak-genre", "prod-2026-06", "prod-2026-06-synthetic",
                    "prod-2026-09", "prod-2026-12"]


def test_envs(example):
    code, out, err = invoke_cli(["envs"], example)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "NAME                    EXTENDS       LOCK      DATASETS",
        "exp-genre-v1            prod-2026-09  locked    movies, ratings, users",
        "exp-genre-v2            exp-genre-v1  locked    movies, ratings, users",
        "exp-onnx                prod-2026-09  locked    movies, ratings, users",
        "exp-onnx-trees          exp-onnx      locked    movies, ratings, users",
        "exp-relabel             prod-2026-09  locked    movies, ratings, users",
        "exp-stream              prod-2026-09  locked    movies, ratings, users",
        # its derived dataset and weak labels are built from the lock when first needed
        "exp-weak-genre          exp-genre-v1  unbuilt   daily_ratings, movies, ratings, users",
        "prod-2026-06            -             locked    movies, ratings, users",
        "prod-2026-06-synthetic  prod-2026-06  locked    movies, ratings, users",
        "prod-2026-09            prod-2026-06  locked    movies, ratings, users",
        "prod-2026-12            prod-2026-09  locked    movies, ratings, users",
    ]


def test_every_environment_but_the_root_extends(example):
    multiverse = Multiverse(Project.discover(example))
    for name in ENVS:
        chain = multiverse.resolve(name).chain
        assert chain[0] == ROOT_ENV, name
        if name == ROOT_ENV:
            assert chain == [ROOT_ENV]
        else:
            assert len(chain) >= 2, f"{name} should branch from another environment"
    assert multiverse.children("prod-2026-09") == ["exp-genre-v1", "exp-onnx", "exp-relabel",
                                                   "exp-stream", "prod-2026-12"]
    assert multiverse.children("exp-genre-v1") == ["exp-genre-v2", "exp-weak-genre"]
    assert multiverse.children("exp-onnx") == ["exp-onnx-trees"]


@pytest.mark.parametrize("env", ENVS)
def test_show(example, env):
    code, out, err = invoke_cli(["show", env, "--format", "json"], example)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["name"] == env
    derived = {"daily_ratings"} if env == "exp-weak-genre" else set()
    assert set(doc["datasets"]) == {"movies", "ratings", "users"} | derived
    if env == "exp-weak-genre":  # inherits exp-genre-v1's label; adds a weak label set
        assert doc["label"] == {"labels": "genre-v1"}
        assert doc["labels"]["genre-rules"]["source"]["model"] == "generative"
    elif env.startswith("exp-genre-"):  # the genre tagger's label: a label set
        assert doc["label"] == {"labels": env.replace("exp-", "")}
        assert doc["labels"][env.replace("exp-", "")]["ui_version"] == env[-1]
    else:
        coverage = doc["label"].pop("coverage")  # every class covered, shares watched
        assert doc["label"] == {"dataset": "ratings", "column": "liked",
                                "classes": [False, True]}
        assert coverage["min_count"] == 100 and coverage["max_share_change"] == 0.1
        assert [s.get("by") for s in doc["evaluation"]["slices"]] == [
            "device", "plan", "country", "age"]
    code, out, err = invoke_cli(["show", env, "--explain"], example)
    assert (code, err) == (0, "")
    assert out.startswith(f"# {env}: resolved from {ROOT_ENV}")


def test_show_explain_attributes_branch_values(example):
    code, out, _ = invoke_cli(["show", "exp-onnx", "--explain"], example)
    lines = out.splitlines()
    assert "  stack: onnx  # environments/exp-onnx.yaml:13" in lines
    assert "  opset: 17  # environments/exp-onnx.yaml:14" in lines
    assert "    uri: data/movies/2026-09.parquet  # environments/prod-2026-09.yaml:12" in lines


def test_diff_prod_09_vs_12(example):
    code, out, err = invoke_cli(["diff", "prod-2026-09", "prod-2026-12"], example)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "--- prod-2026-09",
        "+++ prod-2026-12",
        '~ description: "Production as of 2026-09-30; serving image v1 unchanged." -> '
        '"Serving image v2 - critic scores served, tree ensembles allowed."',
        "~ datasets.movies.columns.critic_score.serving: false -> true",
        "~ serving.ops:",  # a long list, element by element: the new entry is visible
        '    + "sklearn.ensemble.HistGradientBoostingClassifier"',
        '~ serving.requirements: ["scikit-learn>=1.6,<2"] -> ["scikit-learn>=1.8,<2"]',
    ]


def test_diff_json_names_the_new_op(example):
    code, out, _ = invoke_cli(["diff", "prod-2026-09", "prod-2026-12", "--format", "json"],
                              example)
    ops = next(c for c in json.loads(out)["changes"] if c["path"] == "serving.ops")
    assert set(ops["b"]) - set(ops["a"]) == {"sklearn.ensemble.HistGradientBoostingClassifier"}


def test_locks_are_committed_and_up_to_date(example):
    for env in ENVS:
        assert (REPO_ROOT / "environments" / f"{env}.lock.json").is_file(), env
    code, out, err = invoke_cli(["lock", "--check"], example)
    assert (code, out) == (0, f"{len(ENVS)} lock(s) up to date\n"), err
    # a fresh copy builds exp-weak-genre's derived dataset and weak labels from the lock
    assert all(line.startswith(("derive ", "apply labeling functions")) for line in
               err.splitlines()), err


def test_relocking_changes_no_byte(example, tmp_path):
    """Stronger than --check: the environment digests in the committed locks are current too."""
    copy = tmp_path / "relock"
    shutil.copytree(example, copy, ignore=shutil.ignore_patterns(".buildenv"))
    code, out, err = invoke_cli(["lock"], copy)
    assert code == 0, err
    assert all(line.startswith(("derive ", "apply labeling functions")) for line in
               err.splitlines()), err
    assert all(line.split(": ")[1].startswith("unchanged") for line in out.splitlines()), out
    for env in ENVS:
        name = f"{env}.lock.json"
        assert (copy / "environments" / name).read_bytes() == \
            (REPO_ROOT / "environments" / name).read_bytes()


def test_locks_are_committed_not_ignored(tmp_path):
    """The locks belong in the repository: in a checkout, git tracks them; anywhere (Pants'
    sandbox has no `.git`), the repository's `.gitignore` lets `git add` take them."""
    locks = {f"environments/{env}.lock.json" for env in ENVS}
    if (REPO_ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "environments"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
        assert locks <= set(tracked)
    clone = tmp_path / "clone"
    (clone / "environments").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / ".gitignore", clone / ".gitignore")
    for lock in locks:
        shutil.copy2(REPO_ROOT / lock, clone / lock)
    git = ["git", "-c", "core.excludesFile=/dev/null", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "."]):
        subprocess.run(git + args, cwd=clone, check=True, capture_output=True)
    added = subprocess.run(git + ["ls-files", "environments"], cwd=clone, capture_output=True,
                           text=True, check=True).stdout.split()
    assert set(added) == locks


def test_lock_row_counts_match_the_readme():
    rows = {}
    for env in ENVS:
        lock = json.loads((REPO_ROOT / "environments" / f"{env}.lock.json").read_text())
        for ds in lock["datasets"].values():
            rows[ds["uri"]] = ds["rows"]
    assert rows == {
        "data/movies/2026-06.parquet": 3320, "data/movies/2026-09.parquet": 3400,
        "data/movies/2026-09-genre-v2.parquet": 3400,
        "data/users/2026-06.parquet": 7010, "data/users/2026-09.parquet": 7400,
        "data/ratings/2026-06.parquet": 38320, "data/ratings/2026-09.parquet": 51759,
        "data/synthetic/prod-2026-06/users.parquet": 2000,
        "data/synthetic/prod-2026-06/ratings.parquet": 8000,
        "catalog.movies": 3400, "data/tables/ratings": 51759,
        ".buildenv/derived/exp-weak-genre/daily_ratings.parquet": 365,
    }


def test_the_data_branch_and_the_stream_are_pinned_versions(example):
    """exp-relabel follows the Iceberg branch `relabel`; exp-stream pins version 2 of the
    Delta ratings stream, which holds the rows of the 2026-09 export."""
    relabel = json.loads((REPO_ROOT / "environments" / "exp-relabel.lock.json").read_text())
    movies = relabel["datasets"]["movies"]
    assert movies["table"]["ref"] == "relabel" and movies["format"] == "iceberg"
    assert movies["table"]["base"] == "data/tables/iceberg/warehouse/catalog/movies"
    stream = json.loads((REPO_ROOT / "environments" / "exp-stream.lock.json").read_text())
    assert stream["datasets"]["ratings"]["table"]["version"] == 2
    code, out, err = invoke_cli(["diff", "prod-2026-09", "exp-relabel"], example)
    assert code == 0, err
    assert any(line.startswith("~ data movies: sha256:") and "-> snapshot " in line
               and "(ref relabel), 3,400 rows in" in line for line in out.splitlines()), out


def test_genre_label_sets_match_the_readme(example):
    """The label-set change of exp-genre-v2, as examples/README.md describes it."""
    lock = json.loads((REPO_ROOT / "environments" / "exp-genre-v2.lock.json").read_text())
    counts = {name: (e["examples"], e["annotations"], e["annotators"], e["ui_version"])
              for name, e in lock["labels"].items()}
    assert counts == {"genre-v1": (3008, 4041, 6, "1"), "genre-v2": (1085, 1498, 6, "2")}
    assert list(lock["labels"]["genre-v2"]["mappings"]) == ["data/labels/genre-v1-to-v2.sssom.tsv"]
    code, out, err = invoke_cli(["labels", "exp-genre-v2", "--format", "json"], example)
    assert code == 0, err
    report = json.loads(out)
    sets = {s["name"]: s for s in report["label_sets"]}
    v2 = sets["genre-v2"]["resolved"]
    assert (v2["own"], v2["tied"], v2["from_reuse"]) == (1040, 45, 1693)
    assert v2["relabel"] == {"genre-v1": {"drama": 270, "sci-fi": 39}}
    assert sets["genre-v1"]["cancelled"] == 96 and sets["genre-v1"]["agreement"]["pairs"] == 15
    found = {(d["code"], d["severity"]) for d in report["diagnostics"]}
    assert found == {("BE860", "warning"), ("BE861", "warning")}


@pytest.mark.parametrize("env", ENVS)
def test_validate(example, env):
    code, out, err = invoke_cli(["validate", env], example)
    datasets = 4 if env == "exp-weak-genre" else 3
    assert (code, out) == (0, f"{env}: {datasets} dataset(s) valid\n"), err


TRAININGS = ["boosted", "critic-aware", "genre-tagger", "recommender"]
LABEL_SET_ENVS = ["exp-genre-v1", "exp-genre-v2", "exp-weak-genre"]


@pytest.mark.parametrize("training", TRAININGS)
def test_static_checks_pass_everywhere(example, training):
    """Every training checks cleanly against every environment of its kind of label: the
    genre tagger where the label is a label set, the others where it is `ratings.liked`."""
    for env in ENVS:
        code, out, err = invoke_cli(["check", training, "--env", env], example)
        warnings = [line for line in err.splitlines() if "warning[" in line]
        if training == "genre-tagger" and env not in LABEL_SET_ENVS:
            assert code == 1, (env, out, err)
            assert "error[BE864]: ctx.labels() needs a label set, but environment " \
                f"{env} takes its label from column 'ratings.liked'" in err, err
            continue
        assert (code, out) == (0, f"{training} @ {env}: static checks passed\n"), err
        expected = []
        if training == "boosted" and env not in ("prod-2026-12", "exp-onnx-trees"):
            expected.append("warning[BE106]: HistGradientBoostingClassifier")
        if training != "genre-tagger" and env in LABEL_SET_ENVS:
            expected.append("warning[BE865]: environment " + env)
        assert len(warnings) == len(expected), (training, env, err)
        for want in expected:
            assert any(want in w for w in warnings), (training, env, want, err)


def test_generate_is_byte_identical(tmp_path):
    out = tmp_path / "generated"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "movies" / "generate.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = [("*.parquet", 7), ("labels/*.json", 2), ("labels/*.sssom.tsv", 1)]

    def files(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for pattern, _ in data for p in sorted(root.glob(f"**/{pattern}"))
                # synthetic: written by `buildenv synth`; tables: compared version by version
                if "synthetic" not in p.parts and "tables" not in p.parts}

    generated, committed = files(out), files(REPO_ROOT / "data")
    assert len(generated) == sum(n for _, n in data)
    assert generated == committed
    _same_table_versions(out, REPO_ROOT / "data")


def _same_table_versions(generated: Path, committed: Path) -> None:
    """The tables' writers name files by random UUIDs and record commit times: the same
    rows at every version, snapshot and ref is what the generator can promise."""
    deltalake = pytest.importorskip("deltalake")
    from pyiceberg.catalog.sql import SqlCatalog

    for version in range(4):
        a, b = (deltalake.DeltaTable(str(root / "tables" / "ratings"), version=version)
                .to_pyarrow_table().sort_by([("user_id", "ascending"), ("movie_id", "ascending"),
                                             ("rating_ts", "ascending")])
                for root in (generated, committed))
        assert a.equals(b), f"ratings version {version}"
    tables = []
    for root in (generated, committed):
        catalog = SqlCatalog("default", **{
            "uri": f"sqlite:///{root / 'tables' / 'iceberg' / 'catalog.db'}",
            "py-io-impl": "buildenv.data.tables.iceberg_io.RepoFileIO",
            "buildenv.data-root": str(root.parent)})
        tables.append(catalog.load_table("catalog.movies"))
    for ref in ("main", "relabel"):
        a, b = (t.scan().use_ref(ref).to_arrow().sort_by("movie_id") for t in tables)
        assert a.equals(b), f"movies at {ref}"


def test_the_restricted_example_answers_private_statistics(example):
    code, out, err = invoke_cli(["stats", ROOT_ENV, "--dataset", "users", "--columns",
                                 "country,age", "--epsilon", "0.5"], example)
    assert (code, err) == (0, ""), err
    assert out.splitlines()[1].startswith("differentially private: epsilon 0.5 spent by this "
                                          "call; budget of 'users': 4,")
    code, out, err = invoke_cli(["stats", ROOT_ENV, "--dataset", "movies", "--columns",
                                 "genre"], example)
    assert code == 0 and "public dataset: exact figures" in out
    assert out.splitlines()[7].split() == ["drama", "1,080"]


def test_the_synthetic_environment_replaces_exactly_the_restricted_data():
    multiverse = Multiverse(Project.discover(REPO_ROOT))
    real, synthetic = multiverse.resolve(ROOT_ENV).env, multiverse.resolve("prod-2026-06-synthetic").env
    assert synthetic.privacy.restricted == []
    assert set(synthetic.privacy.synthetic) == set(real.privacy.restricted) == {"users",
                                                                                 "ratings"}
    for name, record in synthetic.privacy.synthetic.items():
        assert synthetic.datasets[name].uri == record.uri
        assert record.uri.startswith("data/synthetic/prod-2026-06/")
        assert record.source.environment == ROOT_ENV and record.method == "mst"
    assert synthetic.datasets["movies"] == real.datasets["movies"]
