"""The served model judged once it is loaded back (`training.judging`): parity's predictions of
the served model are made while the evaluation still runs, and the report, the diagnostics and
the failures are those of predicting after it (an early call's failure is raised only where
parity makes that call)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from buildenv.core.model_runtime import EstimatorModel
from buildenv.training.judging import Judged, parity_of
from buildenv.training.outputs import Outputs

INPUTS = ["x1", "x2"]


def _rows(n: int = 60):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    labels = np.where(frame["x1"] + 0.3 * rng.normal(size=n) > 0, "yes", "no").astype(object)
    labels[3] = None  # an unlabelled row: parity and the evaluation skip it
    return SimpleNamespace(frame=frame, labels=labels)


def _model(rows):
    keep = rows.labels != None  # noqa: E711
    return LogisticRegression().fit(rows.frame[keep], rows.labels[keep].astype(str))


class _Served(EstimatorModel):
    """The served model, noting each call on the labelled evaluation rows (parity's; the
    importance's calls are on stacked copies) and whether the evaluation had finished then."""

    def __init__(self, model, finished: threading.Event, failing: str | None = None) -> None:
        super().__init__({"inputs": INPUTS, "task": "classification",
                          "classes": list(model.classes_)}, model)
        self.finished, self.failing = finished, failing
        self.parity_calls: list[tuple[str, bool]] = []

    def _note(self, name: str, frame) -> None:
        if len(frame) == self.labelled:
            self.parity_calls.append((name, self.finished.is_set()))
        if name == self.failing:
            raise RuntimeError(f"{name} failed")

    def predict(self, columns):
        self._note("predict", columns)
        return super().predict(columns)

    def predict_proba(self, columns):
        self._note("predict_proba", columns)
        return super().predict_proba(columns)


class _Evaluation:
    """The evaluation's face for `Judged`: the rows at once, its outputs when `go` is set."""

    def __init__(self, rows, outputs, go: threading.Event, done: threading.Event) -> None:
        self.rows, self.outputs, self.go, self.done = rows, outputs, go, done

    def rows_read(self):
        return self.rows

    def finished(self):
        self.go.wait()
        self.done.set()
        return (self.rows, self.outputs) if self.outputs is not None else None


def _env():
    return SimpleNamespace(serving=SimpleNamespace(
        stack="sklearn", parity=SimpleNamespace(atol=1e-9, rtol=0.0), limits=None))


def _outputs(model, rows, with_proba: bool = True) -> Outputs:
    keep = rows.labels != None  # noqa: E711
    X, y = rows.frame[keep], rows.labels[keep]
    proba = np.asarray(model.predict_proba(X), dtype=np.float64) if with_proba else None
    return Outputs("classification", y, model.predict(X).astype(object), proba,
                   list(model.classes_), "yes")


def _judged(failing: str | None = None, with_proba: bool = True, evaluated: bool = True):
    rows = _rows()
    model = _model(rows)
    go, done = threading.Event(), threading.Event()
    served = _Served(model, done, failing)
    served.labelled = int(np.sum(rows.labels != None))  # noqa: E711
    outputs = _outputs(model, rows, with_proba) if evaluated else None
    family = SimpleNamespace(inputs=INPUTS, is_classifier=True)
    judged = Judged(served, _Evaluation(rows, outputs, go, done), family, _env(), 7,
                    {"format": "skops"})
    return judged, served, go, rows, outputs


def _wait_for(served: _Served, count: int) -> None:
    for _ in range(500):
        if len(served.parity_calls) >= count:
            return
        threading.Event().wait(0.01)


def test_parity_predicts_while_the_evaluation_still_runs():
    judged, served, go, _, _ = _judged()
    _wait_for(served, 2)
    assert served.parity_calls == [("predict", False), ("predict_proba", False)]
    go.set()
    result: dict = {"diagnostics": []}
    judged.merge(result, {})
    assert result["parity"]["rows"] > 0
    assert served.parity_calls == [("predict", False), ("predict_proba", False)]  # not again


def test_the_report_is_the_one_of_predicting_after_the_evaluation():
    judged, served, go, rows, outputs = _judged()
    go.set()
    result: dict = {"diagnostics": []}
    judged.merge(result, {})
    serial: dict = {"diagnostics": []}
    parity_of(served, outputs, rows, _env(), "skops", serial)
    assert result["parity"] == serial["parity"]
    assert result["diagnostics"] == serial["diagnostics"]


def test_an_early_failure_is_raised_where_parity_makes_the_call():
    judged, served, go, _, _ = _judged(failing="predict")
    go.set()
    with pytest.raises(RuntimeError, match="predict failed"):
        judged.merge({"diagnostics": []}, {})


def test_probabilities_asked_early_but_not_needed_fail_nothing():
    judged, served, go, _, _ = _judged(failing="predict_proba", with_proba=False)
    go.set()
    result: dict = {"diagnostics": []}
    judged.merge(result, {})
    assert result["parity"]["rows"] > 0
    assert [name for name, _ in served.parity_calls] == ["predict", "predict_proba"]


def test_a_failed_evaluation_drops_what_parity_predicted():
    judged, served, go, _, _ = _judged(failing="predict", evaluated=False)
    go.set()
    assert judged._parity.result() is None  # nothing raised: the evaluation's failure wins
