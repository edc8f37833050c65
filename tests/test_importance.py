"""Permutation importance (`training.importance`): the permuted copies predicted together give
scikit-learn's `permutation_importance` drops exactly (same shuffles, same scores), in one
prediction calls at once (`PARTS`), whatever `CELLS` splits them into, and the same bytes on every
run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score

from buildenv.training import importance


class _Served:
    """A served model's face: `predict` on a frame of the inputs; counts its calls."""

    def __init__(self, model, classes=None) -> None:
        self.model, self.classes, self.calls, self.rows = model, classes, 0, []

    def predict(self, frame):
        self.calls += 1
        self.rows.append(len(frame))
        assert str(frame["kind"].dtype) == "category"  # dtypes survive the stacking
        X = frame.assign(kind=frame["kind"].cat.codes)
        out = self.model.predict(X)
        return np.asarray(self.classes, dtype=object)[out] if self.classes else out

    def fit(self, X, y):  # what scikit-learn's permutation_importance calls
        return self


def _data(rows: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "noise": rng.normal(size=rows),
        "kind": pd.Categorical(rng.choice(["a", "b", "c"], size=rows))},
        index=np.arange(rows) * 7 + 5)  # not a default index
    signal = 2 * frame["x1"] - frame["x2"] + (frame["kind"] == "b") + rng.normal(0, .5, rows)
    return frame, signal.to_numpy()


def _expected(served, X, y, seed, classifier):
    """What scikit-learn computes with the same scores, one prediction per shuffle."""
    def score(est, frame, truth):
        predicted = est.predict(frame)
        if classifier:
            return float(np.mean(np.asarray(truth, dtype=object) ==
                                 np.asarray(predicted, dtype=object)))
        return float(r2_score(truth, predicted))

    found = permutation_importance(served, X, y, scoring=score, n_repeats=importance.REPEATS,
                                   random_state=seed, n_jobs=1)
    return [max(0.0, float(v)) for v in found.importances_mean]


@pytest.mark.parametrize("classifier", [True, False])
def test_drops_equal_scikit_learns_and_come_from_parts_predicted_at_once(classifier):
    frame, signal = _data(700)
    X = frame.assign(kind=frame["kind"].cat.codes)
    if classifier:
        y = np.where(signal > 0, "yes", "no").astype(object)
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
            X, (signal > 0).astype(int))
        served = _Served(model, ["no", "yes"])
    else:
        y = signal
        served = _Served(HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X, y))
    inputs = ["x1", "x2", "noise", "kind"]
    got = importance.permutation(served, frame, y, 11, inputs, classifier)
    assert got["method"] == "permutation", got
    assert served.calls == 2 and sorted(served.rows) == [6 * 700, 7 * 700]  # 13 copies
    expected = _expected(_Served(served.model, served.classes), frame[inputs], y, 11,
                         classifier)
    assert [got["features"][n]["score_drop"] for n in inputs] == \
        [round(v, 6) for v in expected]
    assert got["features"]["x1"]["rank"] == 1 and got["features"]["x1"]["score_drop"] > 0
    again = importance.permutation(_Served(served.model, served.classes), frame, y, 11, inputs,
                                   classifier)
    assert json.dumps(again) == json.dumps(got)


def test_split_calls_give_the_same_bytes(monkeypatch):
    frame, signal = _data(300)
    X = frame.assign(kind=frame["kind"].cat.codes)
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(X, signal)
    inputs = ["x1", "x2", "noise", "kind"]
    whole = importance.permutation(_Served(model), frame, signal, 5, inputs, False)
    monkeypatch.setattr(importance, "CELLS", 300 * 4 * 2 * importance.PARTS)  # 2 copies a call
    served = _Served(model)
    split = importance.permutation(served, frame, signal, 5, inputs, False)
    assert served.calls == 7 and json.dumps(split) == json.dumps(whole)
    monkeypatch.setattr(importance, "PARTS", 1)  # one call, on this thread's pool of one
    monkeypatch.setattr(importance, "CELLS", 4_000_000)
    served = _Served(model)
    one = importance.permutation(served, frame, signal, 5, inputs, False)
    assert served.calls == 1 and json.dumps(one) == json.dumps(whole)


def test_the_parts_are_predicted_at_once():
    """Fails when the parts are predicted one after the other: each call waits until the
    other has started."""
    import threading

    frame, signal = _data(300)
    X = frame.assign(kind=frame["kind"].cat.codes)
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(X, signal)
    both = threading.Barrier(importance.PARTS, timeout=30)

    class Waiting(_Served):
        def predict(self, frame):
            both.wait()
            return super().predict(frame)

    got = importance.permutation(Waiting(model), frame, signal, 5,
                                 ["x1", "x2", "noise", "kind"], False)
    assert got["method"] == "permutation", got


def test_more_rows_than_rows_are_sampled_then_permuted():
    frame, signal = _data(importance.ROWS + 500)
    X = frame.assign(kind=frame["kind"].cat.codes)
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(X, signal)
    served = _Served(model)
    got = importance.permutation(served, frame, signal, 2, ["x1", "x2", "noise", "kind"], False)
    assert got["method"] == "permutation"
    assert sum(served.rows) == importance.ROWS * (1 + 4 * importance.REPEATS)
    assert all(rows % importance.ROWS == 0 for rows in served.rows)


def test_shuffles_are_seeded_permutations():
    first = importance.shuffles(50, 9)
    assert len(first) == importance.REPEATS
    assert all(sorted(o) == list(range(50)) for o in first)
    assert all((a == b).all() for a, b in zip(first, importance.shuffles(50, 9)))
    assert not (first[0] == importance.shuffles(50, 10)[0]).all()
