"""A model's canonical skops bytes written from skops' state without skops' own zip
(`skops_format.dumps`) are the bytes of `canonical(skops.io.dumps(model))`, the way they were
written before, for every kind of member skops writes; another skops falls back to that way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from buildenv.training import skops_format
from buildenv.training.skops_table import import_with

RNG = np.random.default_rng(7)
X = RNG.normal(size=(400, 4))
Y = X[:, 0] - X[:, 1] > 0


def _models() -> dict:
    import pandas as pd

    frame = pd.DataFrame({"a": X[:, 0], "b": RNG.choice(["x", "y", "z"], 400)})
    return {
        "hgb": HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, Y),
        "hgb-regressor": HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(X, X[:, 2]),
        "hgb-categorical": HistGradientBoostingClassifier(
            max_iter=5, categorical_features=[3], random_state=0).fit(
                np.c_[X[:, :3], RNG.integers(0, 4, 400)], Y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
        # object arrays (the encoder's categories) go into the schema, not into members
        "columns": make_pipeline(ColumnTransformer([("oh", OneHotEncoder(), ["b"])],
                                                   remainder="passthrough"),
                                 LogisticRegression()).fit(frame, Y),
        "text": make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
            ["alpha beta", "beta gamma", "gamma delta", "delta alpha"] * 10, [0, 1, 0, 1] * 10),
        # a scipy sparse member (.npz) besides .npy members
        "sparse": LogisticRegression().fit(X, Y).sparsify(),
    }


@pytest.fixture(scope="module")
def models() -> dict:
    return _models()


def test_the_bytes_are_those_of_skops_own_file_canonicalised(models):
    sio = import_with()
    for name, model in models.items():
        fast = skops_format.dumps(model)
        assert fast == skops_format.canonical(sio.dumps(model)), name
        assert fast == skops_format.dumps(model), name  # the same twice
        loaded = sio.loads(fast, trusted=skops_format.untrusted_in(fast))
        assert type(loaded) is type(model), name


def test_xgboost_booster_bytes_are_renumbered_like_skops_own_file():
    xgboost = pytest.importorskip("xgboost")
    model = xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(X, Y.astype(int))
    fast = skops_format.dumps(model)
    assert fast == skops_format.canonical(import_with().dumps(model))
    assert b"0.bin" in fast or b".bin" in fast  # the booster's bytes member is there


def test_the_state_is_not_written_through_skops_zip(models, monkeypatch):
    """Fails when `dumps` goes through `skops.io.dumps` (its zip, encoded and read back)."""
    sio = import_with()
    expected = skops_format.canonical(sio.dumps(models["hgb"]))

    def refuse(*args, **kwargs):
        raise AssertionError("skops.io.dumps called")

    monkeypatch.setattr(sio, "dumps", refuse)
    assert skops_format.dumps(models["hgb"]) == expected


def test_another_skops_version_takes_skops_own_file(models, monkeypatch):
    sio = import_with()
    expected = skops_format.canonical(sio.dumps(models["pipeline"]))
    calls = []
    original = sio.dumps
    monkeypatch.setattr(sio, "dumps", lambda model: calls.append(1) or original(model))
    monkeypatch.setattr(skops_format, "_SKOPS", "0.0.0")
    assert skops_format.dumps(models["pipeline"]) == expected and calls == [1]
