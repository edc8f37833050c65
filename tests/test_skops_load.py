"""A skops file loaded in one pass (`model_runtime.load`): the schema and skops' tree of nodes
are read once, and the model, the refusals and the errors are those of skops' public
`get_untrusted_types` followed by `load` (still used for any other skops version)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import skops
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from buildenv.core import model_runtime
from buildenv.core.model_runtime import ModelLoadError, import_skops, load, trusted_patterns
from buildenv.training.skops_format import dumps


def _frame(rows: int = 300):
    rng = np.random.default_rng(11)
    X = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows),
                      "c": pd.Categorical(rng.choice(["x", "y", "z"], size=rows))})
    y = (X["a"] + (X["c"] == "y") + 0.3 * rng.normal(size=rows) > 0.5)
    return X, y.to_numpy()


def _models():
    X, y = _frame()
    hgb = HistGradientBoostingClassifier(max_iter=15, categorical_features=["c"],
                                         random_state=0).fit(X, y)
    reg = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(
        X[["a", "b"]], X["a"] * 2)
    pipe = Pipeline([("p", ColumnTransformer([("c", OneHotEncoder(), ["c"])],
                                             remainder="passthrough")),
                     ("m", LogisticRegression())]).fit(X, y)
    return [("hgb", hgb, X, ["sklearn.ensemble.HistGradientBoostingClassifier"]),
            ("reg", reg, X[["a", "b"]], ["sklearn.ensemble.HistGradientBoostingRegressor"]),
            ("pipe", pipe, X, ["sklearn.*"])]


def _descriptor(task: str = "classification") -> dict:
    return {"format": "skops", "file": "model.skops", "inputs": [], "task": task}


def _schema_reads(monkeypatch) -> list[int]:
    """Counts skops' `read_schema` calls, wherever they are made from."""
    import skops.io._persist as persist
    import skops.io._utils as utils

    calls: list[int] = []
    original = utils.read_schema

    def counted(zip_file):
        calls.append(1)
        return original(zip_file)

    monkeypatch.setattr(utils, "read_schema", counted)
    monkeypatch.setattr(persist, "read_schema", counted)
    return calls


@pytest.mark.parametrize("index", [0, 1, 2])
def test_one_pass_loads_what_the_public_calls_load(tmp_path, index):
    name, model, X, ops = _models()[index]
    data = dumps(model)
    path = tmp_path / "model.skops"
    path.write_bytes(data)
    sio = import_skops()
    public = sio.load(str(path), trusted=sio.get_untrusted_types(file=str(path)))
    task = "regression" if name == "reg" else "classification"
    once = load(str(tmp_path), _descriptor(task), trusted_patterns(ops)).estimator
    assert type(once) is type(public)
    assert dumps(once) == dumps(public)
    assert np.array_equal(once.predict(X), public.predict(X))


def test_the_file_is_read_once(tmp_path, monkeypatch):
    _, model, _, ops = _models()[0]
    (tmp_path / "model.skops").write_bytes(dumps(model))
    import_skops()
    reads = _schema_reads(monkeypatch)
    load(str(tmp_path), _descriptor(), trusted_patterns(ops))
    assert len(reads) == 1


def test_another_skops_version_takes_the_public_calls(tmp_path, monkeypatch):
    _, model, X, ops = _models()[0]
    (tmp_path / "model.skops").write_bytes(dumps(model))
    import_skops()
    reads = _schema_reads(monkeypatch)
    monkeypatch.setattr(skops, "__version__", "0.15.0")
    loaded = load(str(tmp_path), _descriptor(), trusted_patterns(ops)).estimator
    assert len(reads) == 2
    assert np.array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("public", [False, True])
def test_refusals_and_errors_are_the_same(tmp_path, monkeypatch, public):
    if public:
        monkeypatch.setattr(model_runtime, "_SKOPS_ONE_PASS", "none")
    (tmp_path / "model.skops").write_bytes(dumps(FunctionTransformer(os.system)))
    with pytest.raises(ModelLoadError, match=r"model\.skops holds type\(s\) the environment's "
                       r"serving\.ops do not allow: posix\.system$"):
        load(str(tmp_path), _descriptor("regression"), trusted_patterns(["sklearn.*"]))
    (tmp_path / "model.skops").write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match=r"^model\.skops is not a readable skops file "
                       r"\(BadZipFile\)$"):
        load(str(tmp_path), _descriptor(), [])
    _, model, _, ops = _models()[0]
    data = dumps(model)
    (tmp_path / "model.skops").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"^model\.skops is not a readable skops file"):
        load(str(tmp_path), _descriptor(), trusted_patterns(ops))


def test_a_known_tree_of_the_files_bytes_is_constructed_without_reading_it_again(
        tmp_path, monkeypatch):
    from buildenv.training.skops_format import read_tree

    _, model, X, ops = _models()[0]
    data = dumps(model)
    (tmp_path / "model.skops").write_bytes(data)
    sio = import_skops()
    public = sio.get_untrusted_types(data=data)
    expected = dumps(sio.load(str(tmp_path / "model.skops"), trusted=public))
    reads = _schema_reads(monkeypatch)
    untrusted, known = read_tree(data)
    assert known is not None and untrusted == public
    loaded = load(str(tmp_path), _descriptor(), trusted_patterns(ops), known=known).estimator
    assert len(reads) == 1  # the tree of the bytes, never the file's again
    assert dumps(loaded) == expected
    assert np.array_equal(loaded.predict(X), model.predict(X))
    # taken once: a second load reads the file
    load(str(tmp_path), _descriptor(), trusted_patterns(ops), known=known)
    assert len(reads) == 2


def test_a_known_tree_of_other_bytes_is_not_used(tmp_path):
    from buildenv.training.skops_format import read_tree

    _, model, X, ops = _models()[0]
    _, other, _, _ = _models()[2]
    (tmp_path / "model.skops").write_bytes(dumps(model))
    _, known = read_tree(dumps(other))
    loaded = load(str(tmp_path), _descriptor(), trusted_patterns(ops), known=known).estimator
    public = load(str(tmp_path), _descriptor(), trusted_patterns(ops)).estimator
    assert type(loaded) is type(model)
    assert dumps(loaded) == dumps(public)
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_a_known_tree_is_still_refused_by_the_environments_patterns(tmp_path):
    from buildenv.training.skops_format import read_tree

    data = dumps(FunctionTransformer(os.system))
    (tmp_path / "model.skops").write_bytes(data)
    _, known = read_tree(data)
    with pytest.raises(ModelLoadError, match=r"model\.skops holds type\(s\) the environment's "
                       r"serving\.ops do not allow: posix\.system$"):
        load(str(tmp_path), _descriptor("regression"), trusted_patterns(["sklearn.*"]),
             known=known)
