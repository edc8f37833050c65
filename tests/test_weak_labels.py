"""Label sets computed by labeling functions (docs/labels.md, "Labeling functions"): votes
cached per (function, file), the majority and generative label models, the lock naming what
changed, coverage and conflict gates, and bad functions refused with a diagnostic."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from partitioned_repo import DAYS, FILES_PER_DAY, age, write_file
from sourcerepo import source_fixtures

from buildenv.env.spec import LabelSet
from buildenv.labels import label_model, weak
from buildenv.labels import matrix as matrix_module
from buildenv.labels.label_model import dawid_skene, generative, majority
from buildenv.labels.matrix import LabelMatrix, coded, merged, plain_integers

FILES = DAYS * FILES_PER_DAY


_progress, template, locked = source_fixtures("weak")


def lock_json(root: Path) -> dict:
    return json.loads((root / "environments" / "ev.lock.json").read_text())


def events(root: Path) -> pd.DataFrame:
    return pq.read_table(root / "data" / "events", columns=["user", "x", "kind"]).to_pandas()


def test_majority_labels_are_the_rules_votes_counted_by_hand(locked):
    df = events(locked)
    pos = (df["x"] > 0.5).astype(int) + (df["kind"] == "a").astype(int)
    neg = (df["x"] < -0.5).astype(int)
    label = np.where(pos > neg, "pos", np.where(neg > pos, "neg", None))  # ties abstain
    expected = sorted(zip(df["user"].astype(str)[label != None], label[label != None]))  # noqa: E711
    got = pq.read_table(locked / ".buildenv/labels/ev/rules.parquet").to_pandas()
    assert sorted(zip(got["key"], got["label"])) == expected
    entry = lock_json(locked)["labels"]["rules"]
    assert entry["source"]["model"] == "majority"
    assert set(entry["source"]["functions"]) == {"positive_x", "negative_x", "kind_a"}
    assert entry["source"]["dataset"] == lock_json(locked)["datasets"]["events"]["digest"]


def test_changing_one_function_reapplies_that_function_only(locked):
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text().replace('> 0.5, "pos"', '> 0.7, "pos"'))
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "BE875" in err and "changed: positive_x" in err, err
    # the function runs on every file (the hint said "on the changed files": none changed)
    assert "hint: run `buildenv lock ev`: only the changed and added functions run again (on " \
        "every file); removing one runs nothing" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"({FILES} function-file pairs)" in err, err
    assert "derive daily" not in err
    # the functions' own time beside the process's: what a re-apply costs, for the bench
    assert re.search(rf"apply labeling functions \({FILES} function-file pairs\): done in "
                     r"[\d.]+ s \(applying \d+\.\d\d s\)", err), err
    got = pq.read_table(locked / ".buildenv/labels/ev/rules.parquet").to_pandas()
    df = events(locked)
    assert len(got) < int(((df["x"] > 0.5) | (df["x"] < -0.5) | (df["kind"] == "a")).sum())


def test_adding_a_function_applies_it_alone_and_removing_one_applies_nothing(locked):
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text() + '''

@buildenv.labeling_function(columns=["kind"])
def kind_c(batch):
    return np.where(batch["kind"] == "c", "neg", None)
''')
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"({FILES} function-file pairs)" in err, err
    rules.write_text(rules.read_text().split("\n\n@buildenv.labeling_function(columns=[\"kind\"])"
                                             "\ndef kind_c")[0])
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "apply labeling" not in err, err
    assert set(lock_json(locked)["labels"]["rules"]["source"]["functions"]) == {
        "positive_x", "negative_x", "kind_a"}


def test_a_lock_of_an_earlier_model_algorithm_is_stale_not_called_non_deterministic(locked):
    """A lock written by a buildenv whose generative model labelled differently (no algorithm
    number, i.e. 1) names the model as what changed (BE875), not the code (BE094)."""
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("functions: rules/sign.py",
                                           "functions: rules/sign.py\n      model: generative"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    path = locked / "environments" / "ev.lock.json"
    data = lock_json(locked)
    assert data["labels"]["rules"]["source"]["model_version"] == 2
    assert "model_version" not in data["datasets"].get("events", {})
    del data["labels"]["rules"]["source"]["model_version"]
    path.write_text(json.dumps(data, indent=2) + "\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "BE875" in err and "algorithm 1" in err and "BE094" not in err, err
    for newer in (4, "2"):  # a newer buildenv's lock, or an edited one
        data["labels"]["rules"]["source"]["model_version"] = newer
        path.write_text(json.dumps(data, indent=2) + "\n")
        code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
        assert code == 1 and "BE875" in err and "does not know" in err, err
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert lock_json(locked)["labels"]["rules"]["source"]["model_version"] == 2
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0, err


def with_gold(root: Path, labels: dict[str, str], rules_also: str = "",
              gold_also: str = "") -> Path:
    """The `rules` set given a `gold` label set (annotated, keys -> labels) with `rules_also`
    added to its source and `gold_also` to the gold set's entry; the environment file."""
    pq.write_table(pa.table({"key": list(labels), "label": list(labels.values()),
                             "annotator": ["ann"] * len(labels)}), root / "data" / "gold.parquet")
    env = root / "environments" / "ev.yaml"
    text = env.read_text().replace("functions: rules/sign.py\n",
                                   "functions: rules/sign.py\n      gold: gold\n" + rules_also)
    env.write_text(text.replace("labels:\n", """\
labels:
  gold:
    uri: data/gold.parquet
    format: parquet
    dataset: events
    key: user
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
""" + gold_also))
    return env


def test_a_generative_set_with_gold_locked_by_algorithm_2_is_stale(locked):
    """Algorithm 2 counted gold keys the dataset lacks in the class prior; a set with a gold
    set is fitted by 3, and its lock at 2 names the model as what changed."""
    with_gold(locked, {"1": "pos", "nobody": "neg"}, "      model: generative\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    path = locked / "environments" / "ev.lock.json"
    data = lock_json(locked)
    assert data["labels"]["rules"]["source"]["model_version"] == 3
    data["labels"]["rules"]["source"]["model_version"] = 2
    path.write_text(json.dumps(data, indent=2) + "\n")
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "BE875" in err and "algorithm 2" in err and "BE094" not in err, err


def test_the_generative_model_is_stored_as_arrays_and_reproducible(locked):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("functions: rules/sign.py",
                                           "functions: rules/sign.py\n      model: generative"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "apply labeling" not in err, err  # votes are cached
    digest = lock_json(locked)["labels"]["rules"]["source"]["model_digest"]
    hexdigest = digest.split(":", 1)[1]
    stored = locked / ".buildenv/labels/models" / hexdigest[:2] / f"{hexdigest}.parquet"
    table = pq.read_table(stored)
    assert table.column_names == ["function", "class", "vote", "probability"]
    assert not list((locked / ".buildenv").rglob("*.pkl"))
    first = (locked / ".buildenv/labels/ev/rules.parquet").read_bytes()
    shutil.rmtree(locked / ".buildenv")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert (locked / ".buildenv/labels/ev/rules.parquet").read_bytes() == first
    assert lock_json(locked)["labels"]["rules"]["source"]["model_digest"] == digest


@pytest.mark.parametrize("gate,code", [("min_coverage: 0.9", "BE876"),
                                       ("max_conflict: 0.05", "BE877")])
def test_coverage_and_conflict_gates(locked, gate, code):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("functions: rules/sign.py",
                                           f"functions: rules/sign.py\n      {gate}"))
    exit_code, _, err = invoke_cli(["lock", "ev"], locked)
    assert exit_code == 1 and code in err, err
    # the lock writes nothing, so `labels` cannot show the figures yet: the error does
    what = "coverage" if code == "BE876" else "conflicts"
    assert re.search(rf"hint: each function's {what}[^:]*: positive_x \d+\.\d%, negative_x "
                     r"\d+\.\d%, kind_a \d+\.\d%", err), err
    assert "`buildenv labels ev` shows every figure once the set locks (until the functions " \
        "are better, relax the gate to lock)" in err, err
    if code == "BE877":  # the command it hints at is one `buildenv tasks` takes
        assert "`buildenv tasks ev --labels rules --select conflict --annotators ... --out " \
            "DIR`" in err, err


def test_labels_shows_each_function(locked):
    code, out, err = invoke_cli(["labels", "ev", "--format", "json"], locked)
    assert code == 0, err
    report = json.loads(out)["label_sets"][0]["functions"]
    df = events(locked)
    assert report["rows"] == len(df)
    assert report["functions"]["kind_a"]["coverage"] == pytest.approx((df["kind"] == "a").mean(), abs=1e-4)
    both = ((df["x"] > 0.5) & (df["kind"] == "a")) | ((df["x"] < -0.5) & (df["kind"] == "a"))
    assert report["functions"]["kind_a"]["overlaps"] == pytest.approx(both.mean(), abs=1e-4)
    conflict = (df["x"] < -0.5) & (df["kind"] == "a")
    assert report["conflict"] == pytest.approx(conflict.mean(), abs=1e-4)


# --- bad functions ------------------------------------------------------------------------------

def _bad_rule(root: Path, columns: str, body: str) -> tuple[int, str]:
    rules = root / "rules" / "sign.py"
    rules.write_text(rules.read_text() + f'''

@buildenv.labeling_function(columns={columns})
def broken(batch):
{body}
''')
    before = (root / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], root)
    assert (root / "environments" / "ev.lock.json").read_bytes() == before  # nothing partial
    assert "Traceback" not in err
    return code, err


def test_a_function_that_raises_is_named_with_its_line_and_file(locked):
    code, err = _bad_rule(locked, '["x"]', '    print("looking at", len(batch), "rows")\n'
                          '    raise RuntimeError("rule broke")')
    assert code == 1 and "BE872" in err and "labeling function 'broken'" in err, err
    # what it printed before failing is shown, as a failed training's output is
    assert re.search(r"hint: output: looking at \d+ rows", err), err
    assert "rules/sign.py:24" in err and "date=2026-09-01/part-0.parquet" in err, err


def test_a_function_returning_the_wrong_length_is_refused(locked):
    code, err = _bad_rule(locked, '["x"]', '    return ["pos"]')
    assert code == 1 and "BE873" in err and "1 values for a batch of 500 rows" in err, err


def test_a_vote_outside_the_taxonomy_is_refused(locked):
    code, err = _bad_rule(locked, '["x"]', '    return np.where(batch["x"] > 0, "maybe", None)')
    assert code == 1 and "BE874" in err and "'maybe'" in err, err


def test_reading_an_undeclared_column_at_run_time_is_refused(locked):
    code, err = _bad_rule(locked, '["x"]', '    return np.where(batch["kind"] == "a", "pos", None)')
    assert code == 1 and "BE871" in err and "'kind'" in err and "rules/sign.py:23" in err, err


def test_selecting_undeclared_columns_names_them(locked):
    """`batch[["x", "kind"]]` raises pandas' KeyError("['kind'] not in index"): the columns
    it lists are named as undeclared reads, as `batch["kind"]` is."""
    code, err = _bad_rule(locked, '["x"]',
                          '    return np.where(batch[["x", "kind"]]["kind"] == "a", "pos", None)')
    assert code == 1 and "BE871" in err and "reads column 'kind'" in err, err


def test_a_key_error_that_names_no_column_is_a_raise_not_an_undeclared_read(locked):
    code, err = _bad_rule(locked, '["x"]', '    return [{"near": "pos"}["far"] for _ in batch["x"]]')
    assert code == 1 and "BE872" in err and "BE871" not in err, err
    assert "raised KeyError" in err and "date=2026-09-01/part-0.parquet" in err, err


def test_a_function_defined_twice_is_refused_before_running(locked):
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text() + '''

@buildenv.labeling_function(columns=["x"])
def positive_x(batch):
    return np.where(batch["x"] > 0.9, "pos", None)
''')
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE870" in err and "apply labeling" not in err, err
    assert "labeling function 'positive_x' is defined twice (first at line 7)" in err, err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before


def test_a_decorator_imported_under_another_name_declares_a_function(locked):
    """`from buildenv import labeling_function as lf`: its functions vote like the others (they
    were left out, the label set computed without them)."""
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text() + '''
from buildenv import labeling_function as lf


@lf(columns=["x"])
def very_negative(batch):
    return np.where(batch["x"] < -2, "neg", None)
''')
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert "very_negative" in lock_json(locked)["labels"]["rules"]["source"]["functions"]


def test_a_labeling_function_the_static_check_cannot_see_is_refused_when_it_runs(locked):
    """A decorator bound to another name by assignment is found only by running the module:
    refused, naming the function, rather than left out of the votes. (Its code is code the
    functions share, so adding it runs them all, and the module is imported.)"""
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text() + '''
lf = buildenv.labeling_function


@lf(columns=["x"])
def very_negative(batch):
    return np.where(batch["x"] < -2, "neg", None)
''')
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "error[BE870]" in err and "very_negative" in err, err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before


def test_a_labeling_function_imported_from_another_module_is_refused_not_ignored(locked):
    """A set's functions are those its module defines: one imported by name would never vote,
    which the lock said nothing about."""
    (locked / "rules" / "extra.py").write_text('''import numpy as np

import buildenv


@buildenv.labeling_function(columns=["x"])
def very_negative(batch):
    return np.where(batch["x"] < -2, "neg", None)
''')
    rules = locked / "rules" / "sign.py"
    rules.write_text("from rules.extra import very_negative  # noqa: F401\n" + rules.read_text())
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "error[BE870]" in err and "imports labeling function(s) " \
        "very_negative (from rules.extra)" in err, err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before


@pytest.mark.parametrize("again", [
    "positive_x = negative_x\n",
    "def positive_x(batch):\n    return [None] * len(batch)\n",
    "from math import floor as positive_x\n",
])
def test_a_function_bound_again_by_anything_is_refused(locked, again):
    """The module keeps its last binding of a name: a labeling function rebound (assigned,
    redefined without the decorator, imported over) would never vote."""
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text() + "\n\n" + again)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE870" in err and "'positive_x' is bound again" in err, err


def test_editing_a_plain_def_beside_the_functions_makes_them_stale(locked):
    """A plain `def` of a labeling function's name is shared code, not the function: editing
    it changes every digest, so `lock --check` does not stay green."""
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text().replace("@buildenv.labeling_function", "def positive_x"
                     "(batch):\n    return 1\n\n\n@buildenv.labeling_function", 1))
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    rules.write_text(rules.read_text().replace("    return 1\n", "    return 2\n", 1))
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 1 and "BE875" in err, err


def test_declaring_a_column_the_dataset_lacks_is_refused_before_running(locked):
    code, err = _bad_rule(locked, '["secret"]', '    return [None] * len(batch)')
    assert code == 1 and "BE871" in err and "apply labeling" not in err, err


def test_a_gold_set_must_be_annotated(locked):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("functions: rules/sign.py",
                                           "functions: rules/sign.py\n      gold: rules"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2 and "BE878" in err, err
    assert "BE852" not in err, err  # not a reuse cycle: the set has no `reuse`


def test_a_cycle_through_gold_is_reported_at_the_entry_that_closes_it(locked):
    env = with_gold(locked, {"1": "pos"}, gold_also="    reuse:\n      - {labels: rules}\n")
    line = env.read_text().splitlines().index("      gold: gold") + 1
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2, err
    assert (f"ev.yaml:{line}:7: error[BE852]: labels.rules.source.gold: reuse cycle: "
            "rules -> gold -> rules") in err, err


# --- the label models ---------------------------------------------------------------------------

def test_majority_ties_and_no_votes_abstain():
    matrix = np.array([[0, 1, -1], [0, 0, 1], [-1, -1, -1], [1, -1, 1], [2, 2, 0]], np.int16)
    assert majority(matrix, 3).tolist() == [-1, 0, -1, 1, 2]


def _simulated(seed: int, rows: int, accuracies: list[float], coverage: float
               ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < 0.3).astype(np.int16)  # class 1 is the rarer
    matrix = np.full((rows, len(accuracies)), -1, np.int16)
    for j, accuracy in enumerate(accuracies):
        right = rng.random(rows) < accuracy
        votes = np.where(right, truth, 1 - truth)
        matrix[:, j] = np.where(rng.random(rows) < coverage, votes, -1)
    return matrix, truth


def test_the_generative_model_recovers_accuracies_and_beats_majority():
    accuracies = [0.9, 0.85, 0.8, 0.6, 0.55]
    matrix, truth = _simulated(7, 50_000, accuracies, 0.7)
    labels, model = generative(matrix, ["neg", "pos"], [f"f{j}" for j in range(5)])
    estimated = model.accuracies()
    for j, accuracy in enumerate(accuracies):
        assert abs(estimated[f"f{j}"] - accuracy) < 0.03, (j, estimated)
    assert model.prior is not None and abs(model.prior[1] - 0.3) < 0.02
    voted = labels >= 0
    by_majority = majority(matrix, 2)
    decided = by_majority >= 0
    assert (labels[voted] == truth[voted]).mean() > (by_majority[decided] ==
                                                     truth[decided]).mean()
    again, _ = generative(matrix, ["neg", "pos"], [f"f{j}" for j in range(5)])
    assert np.array_equal(labels, again)


def test_dawid_skene_on_two_observers_who_always_agree_keeps_their_prior():
    # three items, two observers agreeing: posteriors stay the vote shares; prior = shares
    item = np.array([0, 0, 1, 1, 2, 2])
    observer = np.array([0, 1, 0, 1, 0, 1])
    label = np.array([0, 0, 1, 1, 1, 1])
    fit = dawid_skene(item, observer, label, np.ones(6), 3, 2, 2)
    assert fit.posterior.argmax(axis=1).tolist() == [0, 1, 1]
    assert np.allclose(fit.prior, [1 / 3, 2 / 3])
    assert np.allclose(np.einsum("jkk->jk", fit.confusion), 1.0)


def test_tasks_select_the_examples_where_functions_conflict(locked):
    code, out, err = invoke_cli(["tasks", "ev", "--labels", "rules", "--select", "conflict",
                                 "--annotators", "ann,bob", "--out", "batch",
                                 "--format", "json"], locked)
    assert code == 0, err
    df = events(locked)
    conflict = (df["x"] < -0.5) & (df["kind"] == "a")
    assert json.loads(out)["examples"] == df.loc[conflict, "user"].nunique()
    sent = [t["data"]["user"] for name in ("ann", "bob")
            for t in json.loads((locked / "batch" / f"{name}.json").read_text())]
    assert sorted(sent) == sorted(df.loc[conflict, "user"].unique().tolist())


def test_the_generative_model_keeps_a_dominant_function_over_many_classes():
    """One function votes on every row (90% right) among 15 unbalanced classes, three others
    on some: EM must not drift into a few classes (it did with a whole pseudo-vote per cell)."""
    rng = np.random.default_rng(1)
    k, n = 15, 3400
    prior = np.array([1102, 537, 376, 243, 180, 174, 127, 126, 93, 92, 90, 77, 75, 56, 52.0])
    truth = rng.choice(k, n, p=prior / prior.sum())
    matrix = np.full((n, 4), -1, np.int16)
    matrix[:, 0] = np.where(rng.random(n) < 0.9, truth, rng.integers(0, k, n))
    matrix[:, 1] = np.where(rng.random(n) < 0.08, 0, -1)  # always votes the biggest class
    matrix[:, 2] = np.where(rng.random(n) < 0.07, 9, -1)  # always votes a small class
    some = rng.random(n) < 0.3
    matrix[:, 3] = np.where(some, np.where(rng.random(n) < 0.7, truth, rng.integers(0, k, n)), -1)
    labels, model = generative(matrix, [str(c) for c in range(k)], list("abcd"))
    by_majority = majority(matrix, k)
    assert (labels == truth).mean() > 0.85 > (by_majority == truth).mean()
    assert len(np.unique(labels[labels >= 0])) == k
    estimated = model.accuracies()
    assert abs(estimated["a"] - 0.9) < 0.05 and estimated["c"] < 0.1


def test_functions_that_each_vote_one_class_are_told_apart_by_when_they_abstain():
    """Rules like the docs' (`says_comedy`, `long_is_drama`) vote one class or abstain. Over
    the rows it votes on, such a rule always says the same class, whatever the truth: only
    *when* it abstains tells the classes apart. A model of the votes alone labelled every row
    with the most common class; abstaining is an answer of the model, as in Snorkel's."""
    rng = np.random.default_rng(3)
    n, k = 6000, 3
    truth = rng.choice(k, n, p=[0.45, 0.35, 0.2])
    matrix = np.full((n, 5), -1, np.int16)
    for c in range(k):  # one rule per class: fires on 70% of its class, 3% of the others
        fires = rng.random(n) < np.where(truth == c, 0.7, 0.03)
        matrix[:, c] = np.where(fires, c, -1)
    matrix[:, 3] = np.where(rng.random(n) < 0.2, 0, -1)  # votes class 0 at random
    matrix[:, 4] = np.where(rng.random(n) < 0.5, np.where(rng.random(n) < 0.8, truth, 0), -1)
    labels, model = generative(matrix, ["a", "b", "c"], list("pqrst"))
    by_majority = majority(matrix, k)
    voted = labels >= 0
    assert len(np.unique(labels[voted])) == k
    assert (labels == truth).mean() > (by_majority == truth).mean()
    assert (labels[voted] == truth[voted]).mean() > 0.9
    estimated = model.accuracies()
    assert estimated["p"] > 0.85 and estimated["q"] > 0.85 and estimated["r"] > 0.75
    assert abs(estimated["s"] - 0.45) < 0.05  # right as often as class 0 is the truth
    table = model.table().to_pandas()
    abstains = table[(table["function"] == "p") & table["vote"].isna()]
    abstains = abstains.set_index("class")["probability"]  # fitted on rows with a vote
    assert abstains["a"] < 0.4 and abstains["b"] > 0.9 and abstains["c"] > 0.9


def test_a_training_fits_computed_labels_through_ctx_labels(tmp_path):
    """A computed label set is a label set like any other: `label: {labels: NAME}`, the
    training's `ctx.labels()`, and the artifact's lineage."""
    from labelrepo import make_label_repo

    weak = ("name: weak\nextends: base\nlabels:\n  kind-rules:\n    dataset: items\n"
            "    key: item_id\n    taxonomy: {name: kind, version: 1, classes: [a, b, c]}\n"
            "    source:\n      functions: rules.py\nlabel: {labels: kind-rules}\n")
    rules = ('import numpy as np\nimport buildenv\n\n\n'
             '@buildenv.labeling_function(columns=["x1"])\ndef by_x1(batch):\n'
             '    return np.where(batch["x1"] > 0.3, "a", '
             'np.where(batch["x1"] < -0.3, "b", "c"))\n')
    root = make_label_repo(tmp_path / "repo", envs={"weak": weak}, files={"rules.py": rules})
    assert invoke_cli(["lock", "weak"], root)[0] == 0
    code, out, err = invoke_cli(["build", "tagger", "--env", "weak", "--no-register"], root)
    assert code == 0, err
    lineage = json.loads((root / "dist/tagger/weak/buildenv.json").read_text())
    entry = lineage["labels"]["kind-rules"]
    assert entry["label"] is True and entry["format"] == "parquet"
    assert entry["resolution"]["examples"] == 200
    assert entry["digest"] == lock_json_of(root, "weak")["labels"]["kind-rules"]["digest"]


def lock_json_of(root: Path, env: str) -> dict:
    return json.loads((root / "environments" / f"{env}.lock.json").read_text())


# Issue #22: a re-lock after one new partition of ten million rows cost 18 s of CPU in the
# lock's own process, most of it per row where it need not be. The cuts keep the same file,
# the same figures, the same lock.

def _unique_patterns(matrix: np.ndarray, classes: int) -> tuple[np.ndarray, ...]:
    base = classes + 1
    packed = np.zeros(len(matrix), np.int64)
    for column in range(matrix.shape[1]):
        packed = packed * base + matrix[:, column].astype(np.int64) + 1
    _, first, inverse, counts = np.unique(packed, return_index=True, return_inverse=True,
                                          return_counts=True)
    return matrix[first], counts, inverse


def test_the_vote_rows_of_a_few_classes_are_counted_not_sorted(monkeypatch):
    rng = np.random.default_rng(5)
    matrix = rng.integers(-1, 3, (20_000, 6)).astype(np.int8)
    rows, counts, inverse = _unique_patterns(matrix, 3)
    monkeypatch.setattr(label_model.np, "unique", _refused)
    found = label_model.patterns(matrix, 3)
    monkeypatch.undo()
    assert found.rows.dtype == matrix.dtype and np.array_equal(found.rows, rows)
    assert np.array_equal(found.counts, counts) and np.array_equal(found.inverse, inverse)
    assert np.array_equal(found.rows[found.inverse], matrix)


def _refused(*args, **kwargs):
    raise AssertionError("a per-row path was taken")


def _matrix(keys: list[str | None]) -> LabelMatrix:
    rng = np.random.default_rng(9)
    votes = rng.integers(-1, 3, (len(keys), 4)).astype(np.int8)
    return LabelMatrix(pa.array(keys, pa.string()), votes, ["f0", "f1", "f2", "f3"],
                       ["neg", "pos", "odd"], {})


def _row_by_row(matrix: LabelMatrix, decided: np.ndarray, gold: np.ndarray) -> dict:
    votes = matrix.votes.astype(np.int64)
    voting = votes >= 0
    count = voting.sum(axis=1)
    high = np.where(voting, votes, -1).max(axis=1)
    low = np.where(voting, votes, 99).min(axis=1)
    conflict = (count >= 2) & (high != low)
    functions = {}
    for j, name in enumerate(matrix.functions):
        judged = voting[:, j] & (gold >= 0)
        functions[name] = {"votes": int(voting[:, j].sum()),
                           "overlaps": int((voting[:, j] & (count >= 2)).sum()),
                           "conflicts": int((voting[:, j] & conflict).sum()),
                           "gold": int(judged.sum()),
                           "correct": int((judged & (votes[:, j] == gold)).sum())}
    return {"labeled": int((decided >= 0).sum()), "conflicting": int(conflict.sum()),
            "functions": functions, "gold_rows": int((gold >= 0).sum())}


@pytest.mark.parametrize("model", ["majority", "generative"])
def test_the_computed_file_and_figures_are_the_row_by_row_ones(monkeypatch, model):
    n = 3000
    matrix = _matrix([str(i) for i in range(n)])
    gold_keys = pa.array([str(i) for i in range(0, n, 3)], pa.string())
    gold_labels = pa.array([["neg", "pos", "odd"][i % 3] for i in range(0, n, 3)])
    spec = LabelSet.model_validate({
        "dataset": "events", "key": "user", "source": {"functions": "r.py", "model": model},
        "taxonomy": {"name": "t", "version": 3, "classes": ["neg", "pos", "odd"]}})
    real = pa.array

    def no_row_lists(value, *args, **kwargs):  # the labels, annotator, version columns
        assert not isinstance(value, list) or len(value) < 1000, "a Python string per row"
        return real(value, *args, **kwargs)

    monkeypatch.setattr(weak.pa, "array", no_row_lists)
    got = weak.compute(spec, matrix, (gold_keys, gold_labels))
    monkeypatch.undo()
    decided = (majority(matrix.votes, 3) if model == "majority" else generative(
        matrix.votes, matrix.classes, matrix.functions,
        prior=weak.gold_prior(matrix.classes, gold_labels))[0])
    keep = decided >= 0
    expected = pa.table({
        "key": matrix.keys.filter(pa.array(keep)),
        "label": pa.array([matrix.classes[c] for c in decided[keep]], pa.string()),
        "annotator": pa.array([f"labeling-functions:{model}"] * int(keep.sum()), pa.string()),
        "taxonomy_version": pa.array(["3"] * int(keep.sum()), pa.string())})
    assert got.data == weak._parquet(expected)
    gold = np.full(n, -1)
    gold[::3] = np.arange(0, n, 3) % 3
    figures = got.figures.to_json()
    assert {k: figures[k] for k in ("labeled", "conflicting", "functions", "gold_rows")} == \
        _row_by_row(matrix, decided, gold)
    assert got.examples == int(keep.sum())


def test_the_gold_prior_counts_only_the_gold_examples_the_dataset_holds():
    """A gold set may label keys the dataset does not hold (BE862 says so); those say nothing
    of the dataset's class balance, and a gold key on two rows is one example."""
    n = 600
    matrix = _matrix([str(i) for i in range(n)] + ["4"])
    classes = matrix.classes
    inside = [str(i) for i in range(0, n, 4)]
    labels = [classes[i % 2] for i in range(len(inside))]  # neg and pos only
    spec = LabelSet.model_validate({
        "dataset": "events", "key": "user", "source": {"functions": "r.py",
                                                       "model": "generative"},
        "taxonomy": {"name": "t", "version": 1, "classes": classes}})
    alone = weak.compute(spec, matrix, (pa.array(inside), pa.array(labels)))
    outside = [f"x{i}" for i in range(1000)]
    got = weak.compute(spec, matrix, (pa.array(inside + outside),
                                      pa.array(labels + ["odd"] * len(outside))))
    assert got.model.prior is not None
    assert np.array_equal(got.model.prior, weak.gold_prior(classes, pa.array(labels)))
    assert got.model_data == alone.model_data and got.data == alone.data
    assert got.figures.gold_rows == len(inside) + 1  # key 4's two rows are judged


_SIGN = LabelSet.model_validate({
    "dataset": "events", "key": "user", "source": {"functions": "r.py"},
    "taxonomy": {"name": "sign", "version": 1, "classes": ["neg", "pos"]}})


@pytest.mark.parametrize("keys", [["1", "2", "1", "3", "2", "4", "4"],
                                  ["b", "a", "b", "c", "a", "d", "d"]])
def test_keys_on_several_labeled_rows_are_counted(keys):
    """Key 1 (b) gets pos then neg, key 2 (a) neg twice, key 4 (d) one vote and an abstention:
    two keys share labeled rows, one of them with different labels."""
    votes = np.array([[1], [0], [0], [1], [0], [1], [-1]], np.int8)
    array = pa.array(keys, pa.string())
    matrix = LabelMatrix(array, votes, ["f"], ["neg", "pos"], {}, numbers=plain_integers(array))
    assert weak.compute(_SIGN, matrix, None).repeats == weak.Repeats(2, 1)
    once = LabelMatrix(array, np.array([[1], [0], [-1], [1], [-1], [1], [-1]], np.int8),
                       ["f"], ["neg", "pos"], {})
    assert weak.compute(_SIGN, once, None).repeats is None


def test_a_key_on_several_labeled_rows_is_a_warning_that_counts_them(locked):
    """The fixture's events repeat their users: each user takes its last labeled row's label
    (over restricted data: tests/test_sources_privacy.py)."""
    df = events(locked)
    pos = (df["x"] > 0.5).astype(int) + (df["kind"] == "a").astype(int)
    kept = df[pos != (df["x"] < -0.5).astype(int)]  # ties abstain
    shared = int((kept.groupby("user").size() >= 2).sum())
    code, out, err = invoke_cli(["labels", "ev"], locked)
    assert code == 0, err
    assert shared and f"warning[BE889]: label set 'rules': {shared:,} key(s) of 'events'" in err
    code, out, _ = invoke_cli(["labels", "ev", "--format", "json"], locked)
    assert "BE889" in [d["code"] for d in json.loads(out)["diagnostics"]]
    # not the lock: a warning there keeps its plan from being recorded (every next lock slow)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "BE889" not in err, err


@pytest.mark.parametrize("keys,examples", [
    (["5", "3", "5", "10"], 3), (["007", "7", "7", "8"], 3), (["b", "a", "b", "c"], 3),
    (["1", None, "1", "2"], 2), (["9223372036854775807", "-9223372036854775808", "0", "0"], 3),
])
def test_examples_are_the_distinct_keys(keys, examples):
    assert weak._distinct(pa.array(keys, pa.string())) == examples


def test_integer_keys_are_counted_without_hashing_their_text(monkeypatch):
    keys = pa.array([str(i) for i in np.random.default_rng(1).permutation(5000)] + ["17"])
    monkeypatch.setattr(weak.pc, "count_distinct", _refused)
    assert weak._distinct(keys) == 5000


def test_dictionary_encoded_votes_are_coded_from_their_dictionary():
    """Cached votes read back dictionary-encoded: codes and the votes outside the taxonomy
    come from the few distinct values, not from ten million decoded strings."""
    column = pa.array(["pos", None, "neg", "maybe", "pos", "maybe", "never"]).dictionary_encode()
    outside: dict[str, int] = {}
    codes = matrix_module._dictionary_codes(column, pa.array(["neg", "pos"]), outside)
    assert codes.tolist() == [1, -1, 0, -1, 1, -1, -1]
    assert outside == {"maybe": 2, "never": 1}


# A lock after a new file reads each other file's votes coded, one block per file
# (`labels.matrix`), and codes the new file alone; the label set and the lock are the ones a
# lock from scratch writes.

@pytest.mark.parametrize("classes,functions", [(2, 6), (4, 12), (130, 3)])
def test_merged_blocks_are_the_patterns_of_the_whole_matrix(classes, functions):
    rng = np.random.default_rng(classes)
    width = np.int8 if classes < 127 else np.int16
    matrix = rng.integers(-1, min(classes, 4), (5000, functions)).astype(width)
    cuts = [0, 0, 1, 1700, 1700, 4999, 5000]  # empty files and a one-row file among them
    parts = [matrix[a:b] for a, b in itertools.pairwise(cuts)]
    got = merged([coded(p, classes) for p in parts], classes, functions, width)
    expected = label_model.patterns(matrix, classes)
    assert got.rows.dtype == expected.rows.dtype and np.array_equal(got.rows, expected.rows)
    assert np.array_equal(got.counts, expected.counts)
    assert got.inverse.dtype == expected.inverse.dtype
    assert np.array_equal(got.inverse, expected.inverse)


@pytest.mark.parametrize("model", ["majority", "generative"])
def test_a_label_set_from_blocks_is_the_one_from_its_matrix(model):
    n = 3000
    keys = [str(i) for i in range(n)]
    matrix = _matrix(keys)
    cuts = [0, 1000, 1000, 2500, n]
    blocks = [coded(matrix.votes[a:b], 3, plain_integers(pa.array(keys[a:b], pa.string())))
              for a, b in itertools.pairwise(cuts)]
    held = LabelMatrix(matrix.keys, None, matrix.functions, matrix.classes, {},
                       merged(blocks, 3, 4, np.int8),
                       np.concatenate([b.numbers for b in blocks]))
    gold = (pa.array(keys[::3], pa.string()),
            pa.array([["neg", "pos", "odd"][i % 3] for i in range(0, n, 3)]))
    spec = LabelSet.model_validate({
        "dataset": "events", "key": "user", "source": {"functions": "r.py", "model": model},
        "taxonomy": {"name": "t", "version": 3, "classes": ["neg", "pos", "odd"]}})
    got, expected = weak.compute(spec, held, gold), weak.compute(spec, matrix, gold)
    assert got.data == expected.data and got.model_data == expected.model_data
    assert got.figures.to_json() == expected.figures.to_json()
    assert got.examples == expected.examples
    assert np.array_equal(held.votes, matrix.votes)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_day(root: Path) -> None:
    for part in range(FILES_PER_DAY):
        age(root, write_file(root, DAYS, part, seed=7000 + part))


def test_a_new_partition_codes_its_own_block_and_reads_no_other_votes(locked, monkeypatch):
    blocks = locked / ".buildenv/labels/blocks"
    assert len(list(blocks.rglob("*.parquet"))) == FILES
    add_day(locked)
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    # no function changed: the hint says what does run (it said "only the changed functions")
    assert code == 1 and "label set 'rules' is stale: dataset 'events' changed" in err and \
        "hint: run `buildenv lock ev`: every function runs again on the added and changed " \
        "files only" in err, err
    read: list[str] = []
    real = matrix_module.ArrayStore.read

    def counted(self, key):
        read.append(self.root.name)
        return real(self, key)

    monkeypatch.setattr(matrix_module.ArrayStore, "read", counted)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"({3 * FILES_PER_DAY} function-file pairs)" in err, err
    # the new files' votes, once each; every file's keys
    assert read.count("votes") == 3 * FILES_PER_DAY
    assert read.count("keys") == FILES + FILES_PER_DAY
    assert len(list(blocks.rglob("*.parquet"))) == FILES + FILES_PER_DAY


@pytest.mark.parametrize("model", ["majority", "generative"])
def test_an_incremental_lock_is_byte_identical_to_one_from_scratch(locked, model):
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace(
        "functions: rules/sign.py", f"functions: rules/sign.py\n      model: {model}"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    add_day(locked)
    # what a crash or a bad disk leaves is a miss: one block damaged, one without its record
    stored = sorted((locked / ".buildenv/labels/blocks").rglob("*.parquet"))
    stored[0].write_bytes(stored[0].read_bytes()[:-9] + b"damaged!!")
    stored[1].with_suffix(".json").unlink()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"({3 * FILES_PER_DAY} function-file pairs)" in err, err
    label_set, lock_file = locked / ".buildenv/labels/ev/rules.parquet", env.with_suffix(
        ".lock.json")
    incremental = sha256(label_set), sha256(lock_file)
    shutil.rmtree(locked / ".buildenv" / "labels")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and f"({3 * (FILES + FILES_PER_DAY)} function-file pairs)" in err, err
    assert (sha256(label_set), sha256(lock_file)) == incremental
    code, _, err = invoke_cli(["lock", "ev", "--check"], locked)
    assert code == 0, err


@pytest.mark.parametrize("keys", [[str(i) for i in range(700, 1900)],
                                  [f"u{i}" for i in range(1200)], ["007"] * 1200])
def test_a_stored_block_reads_back_and_a_damaged_one_is_a_miss(tmp_path, keys):
    class Project:
        data_state_dir = tmp_path / ".buildenv"

    store = matrix_module.BlockStore(Project(), "blocks")  # type: ignore[arg-type]
    votes = np.random.default_rng(2).integers(-1, 2, (1200, 5)).astype(np.int8)
    block = coded(votes, 2, plain_integers(pa.array(keys, pa.string())))
    assert (block.numbers is not None) == (keys[0] == "700")
    store.put_block("sha256:ab12", block)
    got = store.read_block("sha256:ab12")
    assert got is not None
    for field in ("patterns", "counts", "index"):
        assert np.array_equal(getattr(got, field), getattr(block, field))
    assert (got.numbers is None) == (block.numbers is None)
    if block.numbers is not None:
        assert np.array_equal(got.numbers, block.numbers)
    path = store.path("sha256:ab12")
    path.write_bytes(path.read_bytes()[:-3] + b"bad")
    assert store.read_block("sha256:ab12") is None
