"""The skops scikit-learn model's MLflow directory, written without MLflow: the same files,
byte for byte, as `mlflow.sklearn.save_model` writes in the same configuration (so an MLflow
upgrade that changes the format fails here), loadable by `mlflow.pyfunc.load_model`, never
importing MLflow in the process that saves it, and MLflow's own writer wherever the
configuration is one this writer does not reproduce.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from familyrepo import make_family_repo
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.training import mlmodel_writer
from buildenv.training.mlmodel_writer import (
    mlflow_saves,
    mlflow_version,
    write_onnx_model,
    write_skops_model,
    writes,
)
from buildenv.training.served_artifact import _written_as
from buildenv.training.signature import ServedSignature
from buildenv.training.skops_format import dumps, untrusted_in

ROWS = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "n1": [1, 2, 3, 4, 5, 6]})
LABELS = [False, False, True, False, True, True]
SIGNATURE = ServedSignature((("double", "x1"), ("long", "n1")), (("boolean", "y"),))
METADATA = {"buildenv": {"format": "skops", "file": "model.skops", "inputs": ["x1", "n1"],
                         "classes": [False, True], "encoded_labels": False}}
# MLflow's random uuid and wall-clock time: replaced by compile.artifact.finalize_mlmodel
_VOLATILE = re.compile(rb"^(model_uuid|utc_time_created): .*$", re.MULTILINE)

MODELS = {
    "logistic": lambda: LogisticRegression().fit(ROWS, LABELS),
    "boosting": lambda: HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(
        ROWS, LABELS),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(ROWS, LABELS),
    "no-predict": lambda: StandardScaler().fit(ROWS),  # MLflow writes no python_function
}
CONFIGURATIONS = {  # signature, requirements
    "sk": (SIGNATURE, ["scikit-learn>=1.6,<2"]),
    "no-signature": (None, ["scikit-learn>=1.6,<2"]),
    "inputs-only": (ServedSignature(SIGNATURE.inputs, None), ["scikit-learn==1.9.1"]),
    "several": (SIGNATURE, ["scikit-learn>=1.6,<2", "numpy>=2", "xgboost[scikit-learn]<4",
                            "pandas; python_version >= '3.10'"]),
    "none": (SIGNATURE, []),
}


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): _VOLATILE.sub(rb"\1: -", p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _by_mlflow(model, out: Path, data: bytes, signature, requirements, untrusted) -> None:
    import mlflow.sklearn

    with _written_as(mlflow.sklearn, data):  # the canonical bytes, as served_artifact saves
        mlflow.sklearn.save_model(model, str(out), signature=signature.to_mlflow() if
                                  signature else None, pip_requirements=requirements,
                                  serialization_format="skops", skops_trusted_types=untrusted,
                                  metadata=METADATA)
    (out / "model.skops").write_bytes(data)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_written_like_mlflow_byte_for_byte(tmp_path, model_name, configuration):
    signature, requirements = CONFIGURATIONS[configuration]
    model = MODELS[model_name]()
    data = dumps(model)
    untrusted = untrusted_in(data)
    assert writes(requirements, None)
    ours, theirs = tmp_path / "ours", tmp_path / "mlflow"
    write_skops_model(ours, data, model, signature, requirements, untrusted, METADATA)
    _by_mlflow(model, theirs, data, signature, requirements, untrusted)
    mine, reference = _contents(ours), _contents(theirs)
    assert sorted(mine) == sorted(reference)
    for name in reference:
        assert mine[name] == reference[name], name
    assert (b"python_function" in mine["MLmodel"]) == (model_name != "no-predict")


def _graph():
    """A small ONNX graph: the probability of `y` as a logistic of x1 + n1."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("x1", "n1")]
    nodes = [helper.make_node("Add", ["x1", "n1"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["probability"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(
        "probability", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_onnx_written_like_mlflow_byte_for_byte(tmp_path, configuration):
    import mlflow.onnx

    signature, requirements = CONFIGURATIONS[configuration]
    proto = _graph()
    ours, theirs = tmp_path / "ours", tmp_path / "mlflow"
    write_onnx_model(ours, proto, signature, requirements, METADATA)
    mlflow.onnx.save_model(proto, str(theirs), signature=signature.to_mlflow() if signature
                           else None, pip_requirements=requirements,
                           save_as_external_data=False, metadata=METADATA)
    mine, reference = _contents(ours), _contents(theirs)
    assert sorted(mine) == sorted(reference)
    for name in reference:
        assert mine[name] == reference[name], name
    assert mlflow.onnx.load_model(str(ours)).SerializeToString() == proto.SerializeToString()
    assert mlflow.pyfunc.load_model(str(ours)).metadata.metadata == METADATA


def test_mlflow_loads_what_it_did_not_write(tmp_path):
    import mlflow.pyfunc

    model = MODELS["boosting"]()
    data = dumps(model)
    out = tmp_path / "model"
    write_skops_model(out, data, model, SIGNATURE, ["scikit-learn>=1.6,<2"], untrusted_in(data),
                      METADATA)
    loaded = mlflow.pyfunc.load_model(str(out))
    assert loaded.metadata.signature.to_dict() == SIGNATURE.to_dict()
    assert np.array_equal(np.asarray(loaded.predict(ROWS)), model.predict(ROWS))


def test_the_version_is_mlflows_own():
    import mlflow

    assert mlflow_version() == mlflow.__version__


@pytest.mark.parametrize("requirements,code_paths", [
    (None, None),  # MLflow infers them
    (["-r requirements.txt"], None),
    (["scikit-learn>=1.6", "scikit-learn<2"], None),  # MLflow merges these
    (["scikit-learn", "mlflow==3.0"], None),  # the user's own MLflow pin
    (["databricks-connect", "pyspark"], None),
    (["scikit-learn  # the library"], None),
    (["not a requirement!"], None),
    (["scikit-learn"], ["/repo/train"]),  # repository code to ship
])
def test_what_it_does_not_reproduce_is_left_to_mlflow(requirements, code_paths):
    assert not writes(requirements, code_paths)


@pytest.mark.parametrize("variable", ["MLFLOW_LOCK_MODEL_DEPENDENCIES", "MLFLOW_TESTING",
                                      "DATABRICKS_RUNTIME_VERSION", "DATABRICKS_ENV_VERSION"])
def test_mlflow_settings_leave_it_to_mlflow(monkeypatch, variable):
    assert writes(["scikit-learn"], None)
    monkeypatch.setenv(variable, "false")
    assert not writes(["scikit-learn"], None)


def test_without_a_readable_mlflow_version_mlflow_writes(monkeypatch):
    monkeypatch.setattr(mlmodel_writer, "mlflow_version", lambda: None)
    assert not writes(["scikit-learn"], None)
    monkeypatch.setattr(mlmodel_writer, "mlflow_version", lambda: "3.18.0.dev0")
    assert not writes(["scikit-learn"], None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_family_repo(tmp_path_factory.mktemp("writer") / "repo")


def test_the_skops_stack_saves_without_importing_mlflow(repo, tmp_path):
    """In a fresh process (as the training's), the sk environment's model is saved and loaded
    back with MLflow never imported; pickles and repository code still save through MLflow."""
    env = Multiverse(Project.discover(repo)).resolve("sk").env
    assert not mlflow_saves(env)
    assert mlflow_saves(env, ["/repo/train"])
    assert mlflow_saves(Multiverse(Project.discover(repo)).resolve("pk").env)
    assert not mlflow_saves(Multiverse(Project.discover(repo)).resolve("ox").env)
    script = f"""
import sys
import pandas as pd
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.training.beside import Judge, preload, preloaded
from buildenv.training.families import adopt
from buildenv.training.served_artifact import load_served, save_served
from buildenv.training.signature import served_signature
env = Multiverse(Project.discover(Path({str(repo)!r}))).resolve("sk").env
preload(env)
preloaded()
assert Judge(None, env).alongside(lambda: "fitted") == ("fitted", None)
rows = pd.DataFrame({{"x1": [0.0, 1.0, 2.0, 3.0], "n1": [1, 2, 3, 4]}})
model = LogisticRegression().fit(rows, [False, False, True, True])
family = adopt(model, env)
out = Path({str(tmp_path / "model")!r})
saved = save_served(family, env, out, served_signature(env, family.inputs, env.label))
assert saved.descriptor is not None and not saved.problems
assert load_served(out, saved, env).predict(rows).tolist() == model.predict(rows).tolist()
print(sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")))
"""
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "MLmodel", "conda.yaml", "model.skops", "python_env.yaml", "requirements.txt"]
