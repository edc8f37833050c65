"""The metrics builds record and promotion gates compare (`training.scoring`), against values
worked out by hand on models whose predictions are fixed: which metrics apply, which rows
count, which class is positive, and what an error may say."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from buildenv.env.spec import Label
from buildenv.training.scoring import METRIC_ALIASES, ScoringError, score, score_metric


class Fixed:
    """A fitted model that answers from a table: predictions and class probabilities."""

    def __init__(self, predicted, proba=None, classes=None, inputs=("x",)):
        self.predicted = list(predicted)
        self.proba = None if proba is None else np.asarray(proba, dtype=float)
        self.feature_names_in_ = np.array(inputs)
        if classes is not None:
            self.classes_ = np.array(classes)

    def predict(self, X):
        return np.array([self.predicted[int(i)] for i in X["x"]])

    def __getattr__(self, name):
        if name == "predict_proba" and self.proba is not None:
            return lambda X: self.proba[[int(i) for i in X["x"]]]
        raise AttributeError(name)


def frame(n):
    return pd.DataFrame({"x": np.arange(n), "unused": np.zeros(n)})


CLASSES = Label(dataset="d", column="y", classes=["no", "yes"])


def test_classification_metrics_by_hand():
    y = ["yes", "no", "yes", "no"]
    proba = [[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.9, 0.1]]  # P(no), P(yes)
    model = Fixed(["yes", "no", "no", "no"], proba, classes=["no", "yes"])
    metrics = score(model, frame(4), y, CLASSES, ["x"], restricted=False)
    assert metrics["accuracy"] == 0.75
    # log loss: the mean of -ln P(true class)
    assert metrics["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3)
                                                 + math.log(0.9)) / 4)
    # AUC of "yes" (the last declared class): of the 2 x 2 (yes, no) pairs, the yes row
    # scores higher in 3 (0.8 > 0.4, 0.8 > 0.1, 0.3 > 0.1) and lower in 1 (0.3 < 0.4)
    assert metrics["roc_auc"] == 0.75


def test_rows_without_a_label_do_not_count():
    model = Fixed([1.0, 2.0, 3.0, 99.0])
    metrics = score(model, frame(4), [1.0, 2.0, 5.0, np.nan], None, ["x"], restricted=False)
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt(4 / 3))
    y = np.array([1.0, 2.0, 5.0])
    assert metrics["r2"] == pytest.approx(1 - 4 / float(((y - y.mean()) ** 2).sum()))


def test_one_labelled_row_has_no_r2():
    metrics = score(Fixed([2.0]), frame(1), [1.0], None, ["x"], restricted=False)
    assert metrics == {"rmse": 1.0, "mae": 1.0}


def test_no_labelled_row_is_an_error():
    with pytest.raises(ScoringError, match="the evaluation rows hold no labelled row"):
        score(Fixed([1.0]), frame(1), [None], None, ["x"], restricted=False)


def test_a_label_the_model_never_saw_leaves_logloss_out():
    model = Fixed(["no", "no"], [[0.0, 1.0], [0.0, 1.0]], classes=["maybe", "no"])
    metrics = score(model, frame(2), ["no", "yes"], None, ["x"], restricted=False)
    assert metrics["accuracy"] == 0.5 and "logloss" not in metrics


def test_auc_needs_both_classes_among_the_rows():
    model = Fixed(["yes", "yes"], [[0.1, 0.9], [0.2, 0.8]], classes=["no", "yes"])
    metrics = score(model, frame(2), ["yes", "yes"], CLASSES, ["x"], restricted=False)
    assert "roc_auc" not in metrics and metrics["accuracy"] == 1.0


def test_booleans_and_strings_are_classification_without_declared_classes():
    metrics = score(Fixed([True, False]), frame(2), [True, True], None, ["x"], restricted=False)
    assert metrics == {"accuracy": 0.5}


def test_inputs_the_rows_lack_are_named():
    with pytest.raises(ScoringError, match="the model reads critic, which the evaluation rows "
                                           "do not serve"):
        score(Fixed([1.0]), frame(1), [1.0], None, ["x", "critic"], restricted=False)


class Failing(Fixed):
    def predict(self, X):
        raise ValueError("row 7 has email jane@example.org")


@pytest.mark.parametrize("restricted, detail", [
    (False, "ValueError while predicting (row 7 has email jane@example.org)"),
    (True, "ValueError while predicting (details withheld: restricted data)"),
])
def test_a_failing_model_is_named_and_restricted_rows_are_not_quoted(restricted, detail):
    with pytest.raises(ScoringError) as caught:
        score(Failing([1.0]), frame(1), [1.0], None, ["x"], restricted=restricted)
    assert str(caught.value) == detail


def test_metric_names_as_trainings_log_them():
    metrics = {"roc_auc": 0.8, "logloss": 0.4}
    assert score_metric("val_auc", metrics) == 0.8 and score_metric("log_loss", metrics) == 0.4
    assert score_metric("accuracy", metrics) is None and score_metric("f1", metrics) is None
    assert set(METRIC_ALIASES.values()) == {"roc_auc", "logloss", "accuracy", "rmse", "mae",
                                            "r2"}
