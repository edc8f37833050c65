"""Evaluation a release can trust: slices, their intervals and gates, label coverage, cards.

Unit tests pin the numbers (every slice metric equals scikit-learn's on the slice's rows; the
bootstrap is seeded and paired; Holm's procedure); configuration tests pin the diagnostics of
bad input at their YAML lines; the end-to-end tests build, promote and card a small seeded
repository in which a second version of the training is worse on one slice only.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from buildrepo import make_build_repo
from conftest import BASE_YAML, invoke_cli, write_repo
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from buildenv.release.slice_gates import SliceRow, holm
from buildenv.training.bootstrap import _TABLE, chunks, intervals, poisson_weights, resample
from buildenv.training.outputs import Outputs
from buildenv.training.slicing import Family, overall

# --- the numbers ----------------------------------------------------------------------------


def _binary(n: int = 3000, seed: int = 0) -> tuple[Outputs, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    p = np.round(np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1), 2)  # rounded: many ties
    codes = rng.integers(0, 5, n).astype(np.int32)
    codes[rng.random(n) < 0.1] = -1  # rows in no slice of the family
    return Outputs("classification", y, p >= 0.5, np.c_[1 - p, p], [False, True], True), codes


def test_every_slice_metric_equals_scikit_learn_on_its_rows():
    out, codes = _binary()
    family = Family(0, codes, [f"s{i}" for i in range(5)], 30, "value", [False] * 5)
    found = resample([overall(len(codes)), family], [out.row_stats()], 200, 0)
    point = found.point[0]
    p = out.proba[:, 1]
    for index, rows in [(0, np.ones(len(codes), bool))] + [(i + 1, codes == i) for i in range(5)]:
        y = out.truth[rows]
        assert point["roc_auc"][index] == pytest.approx(roc_auc_score(y, p[rows]), abs=1e-12)
        assert point["accuracy"][index] == pytest.approx(
            accuracy_score(y, out.predicted[rows]), abs=1e-12)
        assert point["logloss"][index] == pytest.approx(
            log_loss(y, y_proba=out.proba[rows], labels=[False, True]), abs=1e-12)
        assert found.rows[index] == rows.sum()


def _weights(rows: int, resamples: int, seed: int) -> np.ndarray:
    return np.concatenate([poisson_weights(rows, size, seed, index)
                           for index, size in chunks(rows, resamples)])


@pytest.mark.parametrize("ties", [True, False])
def test_every_resample_equals_scikit_learn_with_the_weights_as_sample_weights(ties):
    """The blocked sums and Mann-Whitney counts (training.slice_sums) on real weights, with and
    without tied scores that mix the classes, against scikit-learn's weighted metrics."""
    out, codes = _binary(3000, 2)
    if not ties:
        p = np.random.default_rng(9).random(3000)
        out = Outputs("classification", out.truth, p >= 0.5, np.c_[1 - p, p], [False, True], True)
    family = Family(0, codes, [f"s{i}" for i in range(5)], 30, "value", [False] * 5)
    found = resample([overall(len(codes)), family], [out.row_stats()], 60, 5)
    weights = _weights(len(codes), 60, 5)
    p = out.proba[:, 1]
    for b in range(0, 60, 7):
        for index, rows in [(0, codes > -2)] + [(i + 1, codes == i) for i in range(5)]:
            w = weights[b][rows]
            y = out.truth[rows]
            draws = found.draws[0]
            assert draws["roc_auc"][b, index] == pytest.approx(
                roc_auc_score(y, p[rows], sample_weight=w), abs=1e-12)
            assert draws["accuracy"][b, index] == pytest.approx(
                accuracy_score(y, out.predicted[rows], sample_weight=w), abs=1e-12)
            assert draws["logloss"][b, index] == pytest.approx(
                log_loss(y, out.proba[rows], sample_weight=w, labels=[False, True]), rel=1e-12)


def test_the_weights_are_the_seeded_16_bit_draws_through_the_poisson_table():
    expected = _TABLE[np.random.default_rng([3, 0x5B1CE, 2]).integers(
        0, 1 << 16, size=(7, 1001), dtype=np.uint16)]
    assert np.array_equal(poisson_weights(1001, 7, 3, 2), expected)
    many = poisson_weights(100_000, 10, 0, 0)
    assert abs(many.mean() - 1) < 0.01 and abs(many.var() - 1) < 0.01  # Poisson(1)


def test_regression_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(50, 10, 2000)
    pred = y + rng.normal(0, 3, 2000)
    out = Outputs("regression", y, pred)
    codes = (y > 50).astype(np.int32)
    found = resample([overall(2000), Family(0, codes, ["low", "high"], 30, "bins")],
                     [out.row_stats()], 100, 0)
    for index, rows in [(0, np.ones(2000, bool)), (1, codes == 0), (2, codes == 1)]:
        assert found.point[0]["rmse"][index] == pytest.approx(
            np.sqrt(mean_squared_error(y[rows], pred[rows])), rel=1e-9)
        assert found.point[0]["mae"][index] == pytest.approx(
            mean_absolute_error(y[rows], pred[rows]), rel=1e-9)
        assert found.point[0]["r2"][index] == pytest.approx(r2_score(y[rows], pred[rows]),
                                                            rel=1e-6)


def test_the_bootstrap_is_seeded_and_paired():
    out, codes = _binary(2000, 1)
    family = Family(0, codes, [f"s{i}" for i in range(5)], 30, "value", [False] * 5)
    stats = out.row_stats()
    a = resample([overall(2000), family], [stats, stats], 300, 7)
    b = resample([overall(2000), family], [stats], 300, 7)
    c = resample([overall(2000), family], [stats], 300, 8)
    # the same model twice: every resample's paired difference is exactly zero
    assert np.array_equal(a.draws[0]["roc_auc"], a.draws[1]["roc_auc"], equal_nan=True)
    assert np.array_equal(a.draws[0]["accuracy"], b.draws[0]["accuracy"])  # same seed
    assert not np.array_equal(b.draws[0]["accuracy"], c.draws[0]["accuracy"])
    low, high = intervals(b.draws[0]["roc_auc"], 0.95)
    truth = b.point[0]["roc_auc"]
    assert np.all((low < truth) & (truth < high))
    assert np.all(high - low < 0.2)


def test_intervals_cover_the_truth_at_their_level():
    """Across independent evaluation sets, the 90% interval of the accuracy of a model with
    known accuracy 0.7 holds it about 90% of the time."""
    held = 0
    trials = 120
    for seed in range(trials):
        rng = np.random.default_rng(seed + 100)
        y = rng.random(400) < 0.5
        right = rng.random(400) < 0.7
        out = Outputs("classification", y, np.where(right, y, ~y))
        found = resample([overall(400)], [out.row_stats()], 400, seed)
        low, high = intervals(found.draws[0]["accuracy"], 0.90)
        held += bool(low[0] <= 0.7 <= high[0])
    assert 0.80 <= held / trials <= 0.97


def test_holm_steps_down_and_stops_at_the_first_acceptance():
    rows = [SliceRow(name, 100, "gated", p_value=p)
            for name, p in [("a", 0.001), ("b", 0.02), ("c", 0.04), ("d", 0.2)]]
    # alpha 0.05: 0.001 <= 0.05/4, 0.02 > 0.05/3 -> only 'a' (although 0.02 and 0.04 < 0.05)
    assert [r.name for r in holm(rows, 0.05)] == ["a"]
    assert [r.name for r in holm(rows, 0.1)] == ["a", "b", "c"]


# --- bad input: diagnostics at the YAML line, exit 2 ----------------------------------------

def _env_with(extra: str) -> str:
    return BASE_YAML + textwrap.dedent(extra)


BASE_LINES = len(BASE_YAML.splitlines())


@pytest.mark.parametrize("extra, line, expected", [
    ("evaluation:\n  slices:\n    - by: genres\n", 3,
     r"error\[BE501\]: evaluation.slices\[0\]: unknown column 'genres'.*\n  hint: did you mean "
     "'genre'"),
    ("evaluation:\n  slices:\n    - by: runtime_minutes\n      bins: [0, 100, 100]\n", 4,
     r"error\[BE502\]: .*bin edge 100 is listed twice"),
    ("evaluation:\n  slices:\n    - by: runtime_minutes\n      bins: [0, 200, 100]\n", 4,
     r"error\[BE502\]: .*bin edges must increase: 200 comes before 100"),
    ("evaluation:\n  slices:\n    - by: genre\n      bins: [0, 1]\n", 4,
     r"error\[BE502\]: evaluation.slices\[0\]: bins take a numeric column; 'genre' is string"),
    ("evaluation:\n  slices:\n    - by: runtime_minutes\n", 3,
     r"error\[BE503\]: .*'runtime_minutes' is a float64 column"),
    ("evaluation:\n  slices:\n    - name: long\n      where: [[runtime_minutes, '~', 3]]\n", 4,
     r"error\[BE503\]: evaluation.slices\[0\].where: filter on 'runtime_minutes': unknown "
     "operator '~'"),
    ("evaluation:\n  slices:\n    - name: long\n      where: [[runtime_minutes, '>', 'x']]\n", 4,
     r"error\[BE503\]: .*'x' is not a float64"),
    ("evaluation:\n  slices:\n    - where: [[runtime_minutes, '>', 3]]\n", 3,
     r"error\[BE503\]: .*a `where` slice needs a `name`"),
    ("evaluation:\n  slices:\n    - by: genre\n    - by: genre\n", 4,
     r"error\[BE503\]: evaluation.slices\[1\] repeats evaluation.slices\[0\]"),
    ("promotion:\n  metric: accuracy\n  slices: {max_gap: 0.1}\n", 3,
     r"error\[BE503\]: promotion.slices gates evaluation slices, but evaluation.slices "
     "declares none"),
])
def test_bad_slices_are_configuration_errors_at_their_line(tmp_path, extra, line, expected):
    import re

    write_repo(tmp_path, envs={"base": _env_with(extra)})
    code, out, err = invoke_cli(["show", "base"], tmp_path)
    assert code == 2, out + err
    assert re.search(rf"environments/base.yaml:{BASE_LINES + line}:\d+: {expected}", err), err


def test_a_coverage_rule_naming_an_unknown_class(tmp_path):
    env = BASE_YAML.replace("label: {dataset: ratings, column: liked, classes: [false, true]}",
                            "label:\n  dataset: ratings\n  column: liked\n  classes: [false, "
                            "true]\n  coverage:\n    classes: {treu: {min_count: 3}}")
    write_repo(tmp_path, envs={"base": env})
    code, out, err = invoke_cli(["show", "base"], tmp_path)
    assert code == 2
    assert "error[BE506]: label.coverage.classes: 'treu' is not a class of the label (classes: " \
        "false, true)" in err and "did you mean 'true'?" in err, err


def test_dp_slices_of_restricted_rows_need_public_keys(tmp_path):
    env = _env_with("privacy:\n  restricted: [ratings]\n  release: dp\nevaluation:\n  slices:\n"
                    "    - by: movie_id\n    - by: genre\n")
    write_repo(tmp_path, envs={"base": env.replace("privacy:\n  restricted: [ratings]\n", "", 1)})
    code, out, err = invoke_cli(["show", "base"], tmp_path)
    assert code == 2
    assert "error[BE503]: evaluation.slices[0]: the evaluation rows are restricted and " \
        "privacy.release is dp, so slice keys must be public: 'movie_id' declares no domain" in err
    assert "slices[1]" not in err  # genre declares its domain


def test_release_dp_cannot_be_loosened_by_a_child(tmp_path):
    env = BASE_YAML.replace("  restricted: [ratings]\n", "  restricted: [ratings]\n  release: dp\n")
    write_repo(tmp_path, envs={"base": env, "child": "name: child\nextends: base\nprivacy:\n"
                               "  release: exact\n"})
    code, out, err = invoke_cli(["show", "child"], tmp_path)
    assert code == 2 and "error[BE019]: privacy.release:" in err, err


# --- end to end: build, promote, cards, coverage ---------------------------------------------

SLICES = """\
evaluation:
  slices:
    - by: cat
    - by: x2
      bins: [-10, 0, 10]
    - name: x1-high
      where: [[x1, ">", 1.0]]
promotion:
  metric: accuracy
  required_checks: []
  slices: {max_regression: 0.03, confidence: 0.95}
"""

FLIPPED = """
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures

from train.lr_common import prep


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    y = df["y"].where(df["cat"] != "c", ~df["y"])   # learns the opposite for cat == c
    clf = Pipeline([("cross", PolynomialFeatures(2, interaction_only=True)),
                    ("lr", LogisticRegression(random_state=ctx.seed, max_iter=1000))])
    return prep(clf).fit(df[["x1", "x2", "cat"]], y)
"""

GOOD = """
from sklearn.linear_model import LogisticRegression

from train.lr_common import prep


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    return prep(LogisticRegression(random_state=ctx.seed)).fit(df[["x1", "x2", "cat"]], df["y"])
"""

COMMON = """
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def prep(clf):
    return Pipeline([("prep", ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
         ["x1", "x2"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"])])), ("clf", clf)])
"""

CARD_TEXT = """
description = "Scores items"
intended_use = "Ranking items in the demo"
limitations = "Trained on synthetic data"
owners = ["team-demo"]
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 built and promoted before slices existed; then slices declared and v2 (worse on
    cat=c only) built and refused."""
    root = make_build_repo(tmp_path_factory.mktemp("slices") / "repo")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'entry = "train/lr.py:train"\nenvironments = ["*"]\n',
        'entry = "train/lr.py:train"\nenvironments = ["*"]\n' + CARD_TEXT))
    (root / "train" / "lr_common.py").write_text(COMMON)
    (root / "train" / "lr.py").write_text(GOOD)
    out: dict = {"root": root, "runs": {}}

    def run(name: str, *args: str) -> tuple[int, str, str]:
        out["runs"][name] = invoke_cli(list(args), root)
        return out["runs"][name]

    assert run("lock", "lock")[0] == 0
    assert run("build1", "build", "lr", "--env", "base")[0] == 0
    base = root / "environments" / "base.yaml"
    base.write_text(base.read_text().replace("privacy:\n  restricted: []\n", SLICES))
    (root / "train" / "lr.py").write_text(FLIPPED)
    assert run("lock2", "lock")[0] == 0
    run("build2", "build", "lr", "--env", "base", "--format", "json")
    run("promote1", "promote", "lr", "--env", "base")  # v2 against no champion: fine
    return out


def test_build_records_slices_in_lineage_json_and_mlflow(built):
    from buildenv.compile.registry import client
    from buildenv.core.project import Project

    code, out, err = built["runs"]["build2"]
    assert code == 0, out + err
    pair = json.loads(out)["pairs"][0]
    evaluation = pair["evaluation"]
    lineage = json.loads((built["root"] / "dist" / "lr" / "base" / "buildenv.json").read_text())
    assert lineage["evaluation"] == evaluation
    assert evaluation["bootstrap"] == {"method": "poisson", "resamples": 1000, "seed": 0,
                                       "confidence": 0.95}
    low, high = evaluation["intervals"]["accuracy"]
    assert low < evaluation["metrics"]["accuracy"] < high
    names = [[e["name"] for e in f["slices"]] for f in evaluation["slices"]]
    assert names == [["cat=a", "cat=b", "cat=c"], ["x2=[-10, 0)", "x2=[0, 10]"], ["x1-high"]]
    cat_c = evaluation["slices"][0]["slices"][2]
    assert cat_c["status"] == "scored" and cat_c["rows"] > 30
    assert cat_c["metrics"]["accuracy"]["value"] < 0.5  # the flipped slice
    metrics = client(Project.discover(built["root"])).get_run(
        pair["registered"]["run_id"]).data.metrics
    assert metrics["evaluation.accuracy.cat/c"] == cat_c["metrics"]["accuracy"]["value"]
    assert metrics["evaluation.rows.cat/c"] == cat_c["rows"]
    assert "evaluation.roc_auc.x2/-10_to_0" in metrics and "evaluation.accuracy.x1-high" in metrics


def test_a_slice_regression_fails_promotion_naming_the_slice(built):
    """v2 became champion (no champion before); now v1's code is rebuilt as v3: better on
    cat=c, so no regression; then v2's code again as a candidate against v3: it regresses on
    cat=c only and is refused, the alias stays."""
    root = built["root"]
    (root / "train" / "lr.py").write_text(GOOD)
    assert invoke_cli(["build", "lr", "--env", "base"], root)[0] == 0
    code, out, err = invoke_cli(["promote", "lr", "--env", "base"], root)
    assert code == 0, out + err
    assert "cat=c" in out and "pass" in out
    # the promotion is appended to the registered version's card
    code, out, err = invoke_cli(["card", "lr", "--env", "base", "--champion"], root)
    assert code == 0, err
    assert "## Promotion" in out and "gate slices.max_regression" in out
    code, out, err = invoke_cli(["card", "lr", "--env", "base", "--champion", "--format",
                                 "json"], root)
    props = {p["name"]: p["value"] for p in
             json.loads(out)["components"][0]["modelCard"]["properties"]}
    assert props["buildenv:promotion:gate:slices.max_regression"].startswith("pass")
    (root / "train" / "lr.py").write_text(FLIPPED + "\n# v4\n")
    assert invoke_cli(["build", "lr", "--env", "base"], root)[0] == 0
    code, out, err = invoke_cli(["promote", "lr", "--env", "base"], root)
    assert code == 1, out + err
    import re

    assert re.search(r"base.yaml:\d+:\d+: error\[BE510\]: cat=c: accuracy 0\.\d{4} vs 0\.\d{4}, "
                     r"difference -0\.\d{4} \[-0\.\d{4}, -0\.\d{4}\]: worse than the champion by "
                     r"more than promotion.slices.max_regression 0.03 with 95% confidence", err), err
    assert "error[BE510]: cat=a" not in err and "error[BE510]: cat=b" not in err
    assert re.search(r"cat=c\s+\d+\s+0\.\d{4}\s+0\.\d{4}\s+-0\.\d{4} \[.*\]\s+FAIL", out), out
    assert re.search(r"cat=a\s+\d+\s+.*\s+pass", out), out
    code, out, err = invoke_cli(["history", "lr", "--env", "base", "--format", "json"], root)
    assert json.loads(out)["current"] == "3"


def test_a_champion_without_slice_figures_is_scored_now(built):
    root = built["root"]
    code, out, err = built["runs"]["promote1"]
    assert code == 0, out + err  # v1 was champion? no: nothing promoted before v2
    # v1 (built before slices) is registered; compare a candidate against it directly
    from buildenv.compile.registry import client
    from buildenv.core.project import Project

    c = client(Project.discover(root))
    c.set_registered_model_alias("lr", "base-champion", "1")
    (root / "train" / "lr.py").write_text(GOOD + "\n# v5\n")
    assert invoke_cli(["build", "lr", "--env", "base"], root)[0] == 0
    code, out, err = invoke_cli(["promote", "lr", "--env", "base", "--dry-run"], root)
    assert "note[BE512]: champion lr v1 was built before slices were declared" in err, err


def test_an_empty_slice_is_an_error_at_its_line(tmp_path):
    root = make_build_repo(tmp_path / "repo")
    base = root / "environments" / "base.yaml"
    base.write_text(base.read_text().replace(
        "privacy:\n  restricted: []\n", "evaluation:\n  slices:\n    - by: x2\n"
        "      bins: [100, 200]\n"))
    assert invoke_cli(["lock", "base"], root)[0] == 0
    code, out, err = invoke_cli(["build", "lr", "--env", "base", "--no-register"], root)
    assert code == 1
    line = base.read_text().splitlines().index("      bins: [100, 200]") + 1
    assert f"environments/base.yaml:{line}:7: error[BE504]: evaluation.slices[0]: slice " \
        "x2=[100, 200] holds none of the" in err, err
    assert not (root / "dist" / "lr" / "base").exists()


def test_the_model_card_is_a_valid_cyclonedx_ml_bom_and_reproducible(built, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    root = built["root"]
    artifact = root / "dist" / "lr" / "base"
    document = (artifact / "model_card.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    bom = json.loads(document)
    model = bom["components"][0]
    assert model["type"] == "machine-learning-model" and model["description"] == "Scores items"
    card = model["modelCard"]
    assert card["considerations"]["useCases"] == ["Ranking items in the demo"]
    assert card["considerations"]["users"] == ["team-demo"]
    slices = {m["slice"] for m in card["quantitativeAnalysis"]["performanceMetrics"]}
    assert {"all", "cat=a", "x1-high"} <= slices
    assert any(c["type"] == "data" and c["name"] == "items" and c["hashes"][0]["alg"] == "SHA-256"
               for c in bom["components"])
    # the libraries the model's classes come from, at the versions it was trained with
    lineage = json.loads((artifact / "buildenv.json").read_text())
    sklearn = lineage["libraries"]["scikit-learn"]
    assert {"type": "library", "bom-ref": "library:scikit-learn", "name": "scikit-learn",
            "version": sklearn, "purl": f"pkg:pypi/scikit-learn@{sklearn}"} in bom["components"]
    code, md, err = invoke_cli(["card", "lr", "--env", "base"], root)
    assert code == 0 and md.startswith("# Model card: lr @ base\n\nScores items\n")
    assert f"- trained with: `numpy` {lineage['libraries']['numpy']}, `scikit-learn` " \
           f"{sklearn} (toolchain lock `{lineage['toolchain']['lock']}`)" in md
    assert "| cat=c |" in md and "## Label coverage" in md and "## Privacy" in md
    code, same, err = invoke_cli(["card", "lr", "--env", "base", "--format", "json"], root)
    assert same == document
    # a rebuild of the same inputs: the same card bytes, the same model digest
    again = tmp_path / "again"
    code, out, err = invoke_cli(["build", "lr", "--env", "base", "--no-cache", "--no-register",
                                 "--out", again], root)
    assert code == 0, out + err
    for name in ("model_card.md", "model_card.json"):
        assert (again / name).read_bytes() == (artifact / name).read_bytes()
    digest = json.loads((artifact / "buildenv.json").read_text())["model_digest"]
    assert json.loads((again / "buildenv.json").read_text())["model_digest"] == digest


def test_the_card_is_part_of_the_artifact_digest(built):
    from buildenv.compile.integrity import artifact_digest

    artifact = built["root"] / "dist" / "lr" / "base"
    before = artifact_digest(artifact)
    card = artifact / "model_card.md"
    text = card.read_text()
    card.write_text(text + "edited by hand\n")
    try:
        assert artifact_digest(artifact) != before
    finally:
        card.write_text(text)


def test_card_of_a_pair_never_built(built):
    code, out, err = invoke_cli(["card", "forest", "--env", "base"], built["root"])
    assert code == 1 and "error[BE515]: no model card for forest @ base" in err


# --- label coverage and label drift ------------------------------------------------------------

def _coverage_repo(root: Path, rule: str) -> Path:
    make_build_repo(root)
    base = root / "environments" / "base.yaml"
    base.write_text(base.read_text().replace(
        "label: {dataset: items, column: y, classes: [false, true]}",
        f"label:\n  dataset: items\n  column: y\n  classes: [false, true]\n  coverage: {rule}"))
    return root


def test_validate_names_each_class_below_its_rule(tmp_path):
    root = _coverage_repo(tmp_path / "repo", "{min_count: 30, classes: {true: {min_count: 5000}}}")
    code, out, err = invoke_cli(["validate", "base"], root)
    assert code == 1
    assert "error[BE507]: class 'true': " in err and " training rows, below min_count 5000" in err
    assert " evaluation rows, below min_count 5000" in err
    assert "class 'false'" not in err


def test_coverage_as_a_warning_does_not_fail(tmp_path):
    root = _coverage_repo(tmp_path / "repo", "{min_fraction: 0.9, severity: warning}")
    code, out, err = invoke_cli(["validate", "base"], root)
    assert code == 0, err
    assert "warning[BE507]: class 'false': " in err and "below min_fraction 0.9" in err


def test_a_class_share_moving_is_a_drift_alert(tmp_path):
    root = _coverage_repo(tmp_path / "repo", "{max_share_change: 0.05}")
    table = pq.read_table(root / "data" / "items.parquet")
    y = table.column("y").to_numpy(zero_copy_only=False).copy()
    y[: len(y) // 2] = False  # many more negatives
    pq.write_table(table.set_column(table.schema.get_field_index("y"), "y", pa.array(y)),
                   root / "data" / "items-new.parquet")
    assert invoke_cli(["lock", "base"], root)[0] == 0
    code, out, err = invoke_cli(["drift", "base", "--dataset", "items", "--against",
                                 "data/items-new.parquet"], root)
    assert code == 1
    import re

    assert re.search(r"error\[BE508\]: items.y: class 'false' rose \d+\.\d% → \d+\.\d% "
                     r"\(\+\d+\.\d points\), more than label.coverage.max_share_change 0.05; "
                     r"most frequent class 'true' \(\d+\.\d%\) before, 'false' \(\d+\.\d%\) "
                     "after", out + err), out + err


def test_label_sets_are_covered_and_their_shares_watched(tmp_path):
    """Coverage counts a label set's resolved labels; `drift --labels` alerts on shares."""
    from labelrepo import BASE, make_label_repo

    covered = BASE.replace("label: {labels: kind-v1}", "label:\n  labels: kind-v1\n  coverage: "
                           "{min_count: 1000, max_share_change: 0.05}")
    root = make_label_repo(tmp_path / "repo", envs={"base": covered, "v2": None})
    assert invoke_cli(["lock", "base"], root)[0] == 0
    code, out, err = invoke_cli(["validate", "base"], root)
    assert code == 1
    for name in ("a", "b", "c"):
        assert f"error[BE507]: class '{name}': " in err and "training rows, below min_count " \
            "1000" in err, err
    # a relabel overlay that turns many 'b' into 'a' moves the shares
    from labelrepo import annotation, export, items_table, v1_tasks

    tasks = v1_tasks(items_table())
    for i, task in enumerate(tasks):
        if i % 2 == 0:
            task["annotations"] = [annotation(9000 + i, 99, "a")]
    (root / "data" / "kind-relabel.json").write_text(export(tasks))
    relabel = covered.replace("label:\n  labels: kind-v1", "  relabel:\n"
                              "    uri: data/kind-relabel.json\n    dataset: items\n"
                              "    key: item_id\n    field: kind\n"
                              "    taxonomy: {name: kind, version: 1, classes: [a, b, c]}\n"
                              "    ui_version: \"1\"\n    exposure: allow\n"
                              "label:\n  labels: kind-v1")
    (root / "environments" / "base.yaml").write_text(relabel)
    assert invoke_cli(["lock", "base"], root)[0] == 0
    code, out, err = invoke_cli(["drift", "base", "--labels", "kind-v1", "--against-labels",
                                 "relabel"], root)
    assert "error[BE508]: label set 'kind-v1': class 'a' rose" in out + err, out + err
    assert "most frequent class" in out + err


PRIVATE_DP = """\
name: private
extends: base
datasets:
  items:
    uri: data/items_private.parquet
    columns:
      x1: {range: null}
privacy:
  restricted: [items]
  epsilon_budget: 1.5
  release: dp
evaluation:
  slices: [{by: cat}, {by: x2, bins: [-10, 0, 10]}]
"""


def test_a_dp_release_is_spent_once_per_artifact_and_withheld_without_budget(tmp_path):
    from buildenv.access.budget import Ledger
    from buildenv.core.project import Project

    root = make_build_repo(tmp_path / "repo")
    (root / "environments" / "private.yaml").write_text(PRIVATE_DP)
    assert invoke_cli(["lock", "private"], root)[0] == 0
    args = ["build", "private", "--env", "private", "--no-register", "--format", "json"]
    code, out, err = invoke_cli(args, root)
    assert code == 0, out + err
    first = json.loads(out)["pairs"][0]["evaluation"]
    assert first["release"]["policy"] == "dp" and first["release"]["epsilon_spent"] == 1.0
    rows = first["slices"][0]["slices"][0]["rows"]
    assert set(rows) == {"value", "accuracy"} and rows["accuracy"] > 0
    code, out, err = invoke_cli([*args, "--no-cache", "--out", tmp_path / "again"], root)
    assert code == 0, out + err
    assert json.loads(out)["pairs"][0]["evaluation"] == first  # remembered: same figures
    assert (tmp_path / "again" / "model_card.json").read_bytes() == (
        root / "dist" / "private" / "private" / "model_card.json").read_bytes()
    ledger = Ledger(Project.discover(root).data_state_dir)
    assert [r["purpose"] for r in ledger.records()] == ["evaluation"]
    # another model: 0.5 left, release_epsilon 1: withheld, the build still succeeds
    train = root / "train" / "lr.py"
    train.write_text(train.read_text() + "\n# another model\n")
    code, out, err = invoke_cli(args, root)
    assert code == 0, out + err
    pair = json.loads(out)["pairs"][0]
    assert any(d["code"] == "BE516" and d["severity"] == "warning" for d in pair["diagnostics"])
    assert {e["status"] for f in pair["evaluation"]["slices"] for e in f["slices"]} == {
        "withheld"}
    assert [r["purpose"] for r in ledger.records()] == ["evaluation"]
