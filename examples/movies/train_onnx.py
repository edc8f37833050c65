"""`onnx-logit`: a ready ONNX model, built by hand.

Any exporter's output can be returned as an `onnx.ModelProto` whose graph inputs are column
names (`[rows, 1]` each) and whose outputs are `label` and/or `probabilities` over the
label's classes. Here a logistic regression is fitted with scikit-learn and written out with
`onnx.helper`: standardise, a missing value becomes the mean, MatMul + Sigmoid. The IR
version is pinned to what the serving runtime loads (`serving.max_ir_version`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from examples.movies.features import describe, load_examples

FEATURES = ["release_year", "runtime_minutes", "budget_musd", "age"]


def train(ctx):
    df = load_examples(ctx)
    x = df[FEATURES].to_numpy(dtype=np.float64, na_value=np.nan)
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0) + 1e-9
    z = np.nan_to_num((x - mean) / std)
    fit = LogisticRegression(max_iter=500, random_state=ctx.seed).fit(
        z, df["liked"].astype(bool).to_numpy())
    describe(ctx, "onnx_logit", FEATURES, len(df))
    return _graph(mean, std, fit.coef_.reshape(-1, 1), fit.intercept_)


def _graph(mean, std, weights, bias) -> onnx.ModelProto:
    def const(name, value):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    nodes = [
        helper.make_node("Concat", FEATURES, ["x"], axis=1),
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("IsNaN", ["scaled"], ["missing"]),
        helper.make_node("Where", ["missing", "zero", "scaled"], ["z"]),
        helper.make_node("MatMul", ["z", "weights"], ["logit_raw"]),
        helper.make_node("Add", ["logit_raw", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p_true"]),
        helper.make_node("Sub", ["one", "p_true"], ["p_false"]),
        helper.make_node("Concat", ["p_false", "p_true"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "onnx_logit",
        [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in FEATURES],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [const("mean", mean.reshape(1, -1)), const("std", std.reshape(1, -1)),
         const("zero", 0.0), const("one", 1.0), const("weights", weights),
         const("bias", bias)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8,
                             producer_name="examples.movies.train_onnx")
