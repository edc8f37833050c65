"""The pieces under every model family, without a build: the operator inventory, parity,
canonical skops bytes, trust for skops files, the served-model runtime, the serving keys of
the environment format, static warnings, and `buildenv.TorchModel` staying import-free."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import REPO_ROOT
from onnx import TensorProto, helper, numpy_helper

from buildenv.core.model_runtime import ModelLoadError, load, trusted_patterns
from buildenv.env.spec import Environment
from buildenv.training.onnx_inventory import (
    Inventory,
    inventory,
    ml_opset,
    reduced_build_config,
)
from buildenv.training.parity import Predictions, compare
from buildenv.training.skops_format import canonical, dumps, refused_types

# --- the inventory -----------------------------------------------------------------------------


def _graph_with_branches() -> onnx.ModelProto:
    """Gemm, then If: then-branch Relu, else-branch a call of a local function holding Tanh."""
    then = helper.make_graph([helper.make_node("Relu", ["h"], ["out_then"], name="r")], "then",
                             [], [helper.make_tensor_value_info("out_then", TensorProto.FLOAT,
                                                                None)])
    other = helper.make_graph([helper.make_node("Squash", ["h"], ["out_else"], domain="local",
                                                name="call")], "else", [],
                              [helper.make_tensor_value_info("out_else", TensorProto.FLOAT,
                                                             None)])
    function = helper.make_function("local", "Squash", ["v"], ["w"],
                                    [helper.make_node("Tanh", ["v"], ["w"])],
                                    [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="dense"),
             helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other,
                              name="branch")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2, 2), np.float32), "W"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                   helper.make_opsetid("local", 1)],
                             functions=[function], ir_version=9)


def test_inventory_walks_subgraphs_and_local_functions():
    inv = inventory(_graph_with_branches())
    names = [op.name for op in inv.operators]
    assert names == ["ai.onnx:Gemm", "ai.onnx:Greater", "ai.onnx:If", "ai.onnx:ReduceSum",
                     "ai.onnx:Relu", "ai.onnx:Tanh"]  # no "local:Squash": its body runs
    relu = next(op for op in inv.operators if op.op_type == "Relu")
    assert relu.first_node == "branch.then_branch > r" and relu.opset == 18
    tanh = next(op for op in inv.operators if op.op_type == "Tanh")
    assert tanh.first_node == "branch.else_branch > local:Squash > #0"
    assert (inv.ir_version, inv.opset_import) == (9, {"ai.onnx": 18, "local": 1})
    assert Inventory.from_json(inv.to_json()) == inv
    assert inv.config_lines() == ["ai.onnx;18;Gemm,Greater,If,ReduceSum,Relu,Tanh"]


def test_allow_list_as_an_onnxruntime_reduced_build_config(tmp_path):
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    lines = reduced_build_config(["ai.onnx:Gemm", "ai.onnx:Re*", "ai.onnx.ml:TreeEnsemble*"],
                                 {"ai.onnx": 17, "ai.onnx.ml": ml_opset(17)})
    assert lines[1] == "ai.onnx.ml;3;TreeEnsembleClassifier,TreeEnsembleRegressor"
    assert lines[0].startswith("ai.onnx;17;Gemm,Reciprocal,ReduceL1,")
    path = tmp_path / "ops.config"
    path.write_text("\n".join(lines) + "\n")
    required, _ = parse_config(str(path))
    assert "Relu" in required["ai.onnx"][17] and "Gemm" in required["ai.onnx"][17]
    assert ml_opset(15) == 2 and ml_opset(23) == 3


# --- parity ------------------------------------------------------------------------------------

def test_parity_explains_near_ties_and_refuses_other_flips():
    trained = Predictions(np.array([True, False, True]),
                          np.array([[0.2, 0.8], [0.500001, 0.499999], [0.3, 0.7]]))
    served = Predictions(np.array([True, True, True], dtype=object),
                         np.array([[0.2, 0.8], [0.499999, 0.500001], [0.3, 0.7]]))
    report, reason = compare(trained, served, atol=1e-5, rtol=0, what="onnxruntime")
    assert reason is None
    assert (report["label_flips"], report["near_ties"]) == (1, 1)
    assert report["flips"] == [{"row": 1, "margin": 2e-06, "near_tie": True}]
    assert report["histogram"] == {"0": 4, "1e-6..1e-5": 2}
    served.labels[2] = False  # a confident row flips: refused, with its position
    report, reason = compare(trained, served, atol=1e-5, rtol=0, what="onnxruntime")
    assert reason == ("onnxruntime predicts another label than the trained model on 1 of 3 "
                      "evaluation rows (first: row 2), not explained by a near-tie")


def test_parity_tolerance_is_absolute_plus_relative():
    trained = Predictions(None, None, np.array([100.0, 2.0, np.nan]))
    served = Predictions(None, None, np.array([100.0009, 2.0, np.nan]))
    report, reason = compare(trained, served, atol=1e-5, rtol=1e-5, what="x")
    assert reason is None and report["max_value_diff"] == 0.0009
    report, reason = compare(trained, served, atol=1e-5, rtol=1e-6, what="x")
    assert reason == ("x differs from the trained model by more than serving.parity on 1 of 3 "
                      "evaluation rows (worst: row 0, value difference 0.0009 > tolerance "
                      "0.00011)")
    assert report["worst"] == [{"row": 0, "diff": 0.0009, "tolerance": 0.00011}]


# --- skops: canonical bytes and the environment's trust ----------------------------------------

def _pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "c": rng.choice(["x", "y"], 200)})
    y = rng.random(200) > 0.5
    return Pipeline([("p", ColumnTransformer([("n", SimpleImputer(), ["a"]),
                                              ("c", OneHotEncoder(), ["c"])])),
                     ("m", LogisticRegression())]).fit(X, y), X


def test_skops_bytes_do_not_depend_on_memory_addresses():
    model, X = _pipeline()
    first, second = dumps(model), dumps(copy.deepcopy(model))
    assert first == second and canonical(first) == first
    from buildenv.core.model_runtime import import_skops

    loaded = import_skops().loads(first, trusted=["numpy.dtype"])
    assert (loaded.predict_proba(X) == model.predict_proba(X)).all()


def test_trusted_types_come_from_serving_ops():
    model, _ = _pipeline()
    assert refused_types(dumps(model), ["sklearn.*"]) == []
    patterns = trusted_patterns(["xgboost.XGBClassifier", "sklearn.linear_model."
                                 "LogisticRegression"])
    assert "xgboost.core.Booster" in patterns
    assert "sklearn.linear_model._logistic.LogisticRegression" in patterns
    assert "posix.system" not in patterns


def test_a_skops_file_with_an_untrusted_type_is_never_constructed(tmp_path):
    import os

    from sklearn.preprocessing import FunctionTransformer

    data = dumps(FunctionTransformer(os.system))
    (tmp_path / "model.skops").write_bytes(data)
    descriptor = {"format": "skops", "file": "model.skops", "inputs": ["a"], "task": "regression"}
    with pytest.raises(ModelLoadError, match=r"do not allow: posix\.system$"):
        load(str(tmp_path), descriptor, trusted_patterns(["sklearn.*"]))
    with pytest.raises(ModelLoadError, match="pickles are not accepted here"):
        load(str(tmp_path), {**descriptor, "format": "pickle"}, [])


# --- the runtime feeds graphs from columns -----------------------------------------------------

def test_onnx_feeds_nulls_as_nan_and_empty_strings(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Identity", ["s"], ["label"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info("s", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("xf", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("label", TensorProto.STRING, [None])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=8), tmp_path / "m.onnx")
    served = load(str(tmp_path), {"format": "onnx", "file": "m.onnx", "task": "classification",
                                  "classes": ["", "a"]})
    feeds = served.feeds({"x": [1.0, None, float("nan")], "s": ["a", None, float("nan")]})
    assert np.isnan(feeds["x"][1:]).all() and feeds["x"].shape == (3, 1)
    assert list(feeds["s"]) == ["a", "", ""]
    assert list(served.predict(pd.DataFrame({"x": [2.0], "s": ["a"]}))) == ["a"]


# --- the environment format --------------------------------------------------------------------

def _env(serving: dict) -> Environment:
    return Environment.model_validate({
        "name": "e", "datasets": {"d": {"uri": "d.parquet", "columns": {"a": {
            "dtype": "int64"}}}}, "serving": serving})


def test_onnx_ops_are_operators_not_classes():
    env = _env({"stack": "onnx", "opset": 17})
    assert env.serving.ops == ["ai.onnx:*", "ai.onnx.ml:*"]
    assert (env.serving.parity.atol, env.serving.format, env.serving.validate_inputs) == (
        1e-5, "onnx", "reject")
    with pytest.raises(Exception, match=r"'sklearn\.pipeline\.Pipeline' is not one"):
        _env({"stack": "onnx", "opset": 17, "ops": ["sklearn.pipeline.Pipeline"]})


def test_defaults_leave_the_environment_digest_alone():
    from buildenv.env.resolve import canonical_environment

    plain = _env({"stack": "sklearn", "ops": ["sklearn.*"]})
    spelled = _env({"stack": "sklearn", "ops": ["sklearn.*"], "format": "skops",
                    "parity": {"atol": 1e-5}, "validate_inputs": "reject"})
    assert canonical_environment(plain) == canonical_environment(spelled)
    assert "format" not in canonical_environment(plain)["serving"]


# --- buildenv.TorchModel -----------------------------------------------------------------------

def test_import_buildenv_does_not_import_torch():
    code = ("import sys, buildenv; from buildenv import TorchModel; "
            "print(TorchModel.__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    assert out == "TorchModel False\n"


def test_torch_model_checks_its_contract_when_built():
    import torch

    from buildenv import TorchModel
    from buildenv.training.families.torch_contract import ModelContractError

    module = torch.nn.Linear(2, 2)
    assert TorchModel(module, inputs=["a", "b"]).output == "logits"
    for kwargs, message in [({"inputs": "ab"}, "non-empty list of column names"),
                            ({"inputs": ["a", "a"]}, "name a column twice"),
                            ({"inputs": ["a"], "output": "value", "classes": [1, 2]},
                             "takes no classes")]:
        with pytest.raises(ModelContractError, match=message):
            TorchModel(module, **kwargs)
    with pytest.raises(ModelContractError, match=r"wraps a torch\.nn\.Module, not list"):
        TorchModel([module], inputs=["a"])
