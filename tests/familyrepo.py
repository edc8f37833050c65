"""A seeded repository with a training per model family and per planted problem (issue: every
model family, compiled against the serving stack's operators, pickle-free).

`items` has 5,000 rows (more than twice the pre-check's sample, so the pre-check runs): a bool
label `y` and a three-class string label `status`, served numeric and categorical columns, and
a training-only `secret`. Environments: `sk` (sklearn stack, XGBoost and LightGBM allowed),
`pk` (the same with `format: pickle`), `ox` (onnx stack, every standard and ML operator),
`ox-linear` (no tree ensembles), `ox-old` (an older runtime: opset 15, IR 7), `ox-multi` (the
three-class label), `ox-tight` (parity without tolerance, tiny budgets), `ox-warn`
(`validate_inputs: warn`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 5000

TRAININGS = ["sk-lr", "xgb", "xgb-multi", "lgbm", "mlp", "mlp-seq", "mlp-multi", "onnx-ready",
             "secret-slow", "secret-slow-noprecheck", "bare-module", "bad-forward",
             "bad-output", "wrapped-module", "onnx-bad-names", "onnx-invalid", "user-func",
             "generator-holder", "custom-convert", "xgb-slow"]

# The families' trainings run in buildenv's own interpreter (the test extra installs the model
# libraries there), as under Pants: these tests are about what happens inside the training
# process. Trainings in their own resolved environments, XGBoost and LightGBM included, are
# tests/test_toolchains.py's and tests/test_shipping.py's.
PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.toolchains]
mode = "interpreter"

[tool.buildenv.trainings.sk-lr]
entry = "train/sk_lr.py:train"
environments = ["sk", "pk", "ox*"]

[tool.buildenv.trainings.xgb]
entry = "train/xgb.py:train"
environments = ["sk", "ox", "ox-linear"]

[tool.buildenv.trainings.xgb-multi]
entry = "train/xgb.py:train"
environments = ["ox-multi"]

[tool.buildenv.trainings.lgbm]
entry = "train/lgbm.py:train"
environments = ["sk", "ox"]

[tool.buildenv.trainings.mlp]
entry = "train/mlp.py:train"
environments = ["ox", "ox-old", "sk", "ox-warn"]

[tool.buildenv.trainings.mlp-seq]
entry = "train/mlp_seq.py:train"
environments = ["ox", "ox-old"]

[tool.buildenv.trainings.mlp-multi]
entry = "train/mlp.py:train"
environments = ["ox-multi"]

[tool.buildenv.trainings.onnx-ready]
entry = "train/onnx_ready.py:train"
environments = ["ox", "ox-old"]

[tool.buildenv.trainings.secret-slow]
entry = "train/secret_slow.py:train"
environments = ["ox", "sk"]
timeout = 120

[tool.buildenv.trainings.xgb-slow]
entry = "train/xgb_slow.py:train"
environments = ["ox-linear"]
timeout = 120

[tool.buildenv.trainings.secret-slow-noprecheck]
entry = "train/secret_slow.py:train"
environments = ["sk"]
timeout = 40
precheck = false

[tool.buildenv.trainings.bare-module]
entry = "train/bad_torch.py:bare"
environments = ["ox"]

[tool.buildenv.trainings.bad-forward]
entry = "train/bad_torch.py:bad_forward"
environments = ["ox"]

[tool.buildenv.trainings.bad-output]
entry = "train/bad_torch.py:bad_output"
environments = ["ox"]

[tool.buildenv.trainings.wrapped-module]
entry = "train/bad_torch.py:wrapped"
environments = ["sk"]

[tool.buildenv.trainings.onnx-bad-names]
entry = "train/onnx_ready.py:bad_names"
environments = ["ox"]

[tool.buildenv.trainings.onnx-invalid]
entry = "train/onnx_ready.py:invalid"
environments = ["ox"]

[tool.buildenv.trainings.user-func]
entry = "train/user_func.py:train"
environments = ["sk"]

[tool.buildenv.trainings.custom-convert]
entry = "train/user_func.py:generator_holder"
environments = ["ox"]

[tool.buildenv.trainings.generator-holder]
entry = "train/user_func.py:generator_holder"
environments = ["sk-own"]
"""

BASE_COLUMNS = """\
datasets:
  items:
    uri: data/items.parquet
    columns:
      id: {dtype: int64, nullable: false, unique: true}
      x1: {dtype: float64, nullable: false, range: [-20, 20]}
      x2: {dtype: float64, max_null_fraction: 0.2}
      n1: {dtype: int64, nullable: false, range: [0, 100]}
      cat: {dtype: string, nullable: false, domain: [a, b, c]}
      secret: {dtype: float64, serving: false}
      y: {dtype: bool, nullable: false}
      status: {dtype: string, nullable: false, domain: [early, late, on_time]}
evaluation: {holdout: 0.2, key: [id]}
promotion: {metric: val_auc, min_value: 0.5}
"""

ENVIRONMENTS = {
    "sk": "name: sk\n" + BASE_COLUMNS + """\
label: {dataset: items, column: y, classes: [false, true]}
serving:
  stack: sklearn
  ops:
    - sklearn.pipeline.Pipeline
    - sklearn.compose.ColumnTransformer
    - sklearn.preprocessing.*
    - sklearn.impute.SimpleImputer
    - sklearn.linear_model.LogisticRegression
    - xgboost.XGBClassifier
    - lightgbm.LGBMClassifier
  requirements: ["scikit-learn>=1.6,<2"]
""",
    "sk-own": "name: sk-own\nextends: sk\n" + """\
serving:
  ops: [sklearn.pipeline.Pipeline, "train.*"]
""",
    "pk": "name: pk\nextends: sk\nserving:\n  format: pickle\n",
    "ox": "name: ox\n" + BASE_COLUMNS + """\
label: {dataset: items, column: y, classes: [false, true]}
serving:
  stack: onnx
  opset: 18
  ops: ["ai.onnx:*", "ai.onnx.ml:*"]
  requirements: ["onnxruntime>=1.17,<2"]
""",
    "ox-linear": """\
name: ox-linear
extends: ox
serving:
  ops:
    - "ai.onnx:*"
    - "ai.onnx.ml:Linear*"
    - "ai.onnx.ml:Scaler"
    - "ai.onnx.ml:Imputer"
    - "ai.onnx.ml:OneHotEncoder"
    - "ai.onnx.ml:Normalizer"
""",
    "ox-old": """\
name: ox-old
extends: ox
serving:
  opset: 15
  max_ir_version: 7
""",
    "ox-multi": """\
name: ox-multi
extends: ox
label: {dataset: items, column: status, classes: [early, late, on_time]}
promotion: null
""",
    "ox-tight": """\
name: ox-tight
extends: ox
serving:
  parity: {atol: 0, rtol: 0}
  limits: {max_model_mb: 0.001, max_latency_ms: 0.000001}
""",
    "ox-warn": """\
name: ox-warn
extends: ox
serving:
  validate_inputs: warn
""",
}

_COMMON = """
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

FEATURES = ["x1", "x2", "n1", "cat"]


def label(ctx, df):
    \"\"\"The environment's label, as integer codes into label.classes for XGBoost.\"\"\"
    column = ctx.env.label.column
    classes = ctx.env.label.classes
    return df[column].map({c: i for i, c in enumerate(classes)}).to_numpy()


def read(ctx):
    return ctx.read("items", columns=FEATURES + [ctx.env.label.column])


def trees_prep():
    return ColumnTransformer([("cat", OrdinalEncoder(), ["cat"]),
                              ("num", "passthrough", ["x1", "x2", "n1"])])
"""

TRAINING_FILES = {
    "sk_lr.py": _COMMON + """
from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = read(ctx)
    prep = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
         ["x1", "x2", "n1"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"])])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(random_state=ctx.seed))])
    ctx.log_metric("rows", len(df))
    return model.fit(df[FEATURES], df[ctx.env.label.column])
""",
    "xgb.py": _COMMON + """
from xgboost import XGBClassifier


def train(ctx):
    df = read(ctx)
    model = Pipeline([("prep", trees_prep()),
                      ("clf", XGBClassifier(n_estimators=30, max_depth=3,
                                            random_state=ctx.seed))])
    return model.fit(df[FEATURES], label(ctx, df))  # encoded labels
""",
    "xgb_slow.py": _COMMON + """
import time

from xgboost import XGBClassifier


def train(ctx):
    df = read(ctx)
    if len(df) > 3000:  # the full fit takes minutes; the pre-check's sample does not
        time.sleep(600)
    model = Pipeline([("prep", trees_prep()),
                      ("clf", XGBClassifier(n_estimators=5, max_depth=2,
                                            random_state=ctx.seed))])
    return model.fit(df[FEATURES], label(ctx, df))
""",
    "lgbm.py": _COMMON + """
from lightgbm import LGBMClassifier


def train(ctx):
    df = read(ctx)
    model = Pipeline([("prep", trees_prep()),
                      ("clf", LGBMClassifier(n_estimators=30, num_leaves=7, deterministic=True,
                                             force_row_wise=True, random_state=ctx.seed,
                                             verbose=-1))])
    return model.fit(df[FEATURES], df[ctx.env.label.column])
""",
    "mlp.py": """
import numpy as np
import torch
from torch import nn

import buildenv

INPUTS = ["x1", "x2", "n1"]


class Net(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        return self.layers(torch.nan_to_num(x / 10.0))


def train(ctx):
    df = ctx.read("items", columns=INPUTS + [ctx.env.label.column])
    classes = ctx.env.label.classes
    x = torch.from_numpy(df[INPUTS].to_numpy(dtype=np.float32, na_value=np.nan))
    y = torch.from_numpy(df[ctx.env.label.column].map(
        {c: i for i, c in enumerate(classes)}).to_numpy().astype(np.int64))
    net = Net(len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return buildenv.TorchModel(net, inputs=INPUTS, output="logits", classes=classes)
""",
    "mlp_seq.py": """
import numpy as np
import torch
from torch import nn

import buildenv

INPUTS = ["x1", "n1"]  # never null: no layer of torch replaces NaN


def train(ctx):  # torch's own classes only: exported by the export worker
    df = ctx.read("items", columns=INPUTS + [ctx.env.label.column])
    classes = ctx.env.label.classes
    x = torch.from_numpy(df[INPUTS].to_numpy(dtype=np.float32))
    y = torch.from_numpy(df[ctx.env.label.column].map(
        {c: i for i, c in enumerate(classes)}).to_numpy().astype(np.int64))
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, len(classes)))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return buildenv.TorchModel(net, inputs=INPUTS, output="logits", classes=classes)
""",
    "onnx_ready.py": """
import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model(inputs, *, ir=8, valid=True):
    w = numpy_helper.from_array(np.array([[0.6], [-0.4]], dtype=np.float32), "w")
    nodes = [helper.make_node("Concat", inputs, ["x"], axis=1),
             helper.make_node("IsNaN", ["x"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "x"], ["z"]),
             helper.make_node("MatMul", ["z", "w"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["p1"]),
             helper.make_node("Sub", ["one", "p1"], ["p0"]),
             helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1)]
    if not valid:
        nodes.append(helper.make_node("NoSuchOperator", ["p1"], ["junk"]))
    init = [w, numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(
        nodes, "ready", [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1])
                         for c in inputs],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=ir)


def train(ctx):
    ctx.read("items", columns=["x1", "x2", "y"])
    return _model(["x1", "x2"])


def bad_names(ctx):
    ctx.read("items", columns=["x1", "x2", "y"])
    return _model(["feature_a", "x2"])


def invalid(ctx):
    ctx.read("items", columns=["x1", "x2", "y"])
    return _model(["x1", "x2"], valid=False)
""",
    "secret_slow.py": _COMMON + """
import time

from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("items", columns=["x1", "secret", "y"])
    X = df[["x1", "secret"]]
    if len(X) > 3000:  # the full fit takes minutes; the pre-check's sample does not
        time.sleep(600)
    return LogisticRegression().fit(X, df["y"])
""",
    "bad_torch.py": """
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

import buildenv


def _data(ctx):
    return ctx.read("items", columns=["x1", "x2", "y"])


def bare(ctx):
    _data(ctx)
    return nn.Linear(2, 2)


def bad_forward(ctx):
    _data(ctx)
    return buildenv.TorchModel(nn.Linear(5, 2), inputs=["x1", "x2"], output="logits")


def bad_output(ctx):
    _data(ctx)
    return buildenv.TorchModel(nn.Linear(2, 2), inputs=["x1", "x2"], output="scores")


class TorchWrapper(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.net_ = nn.Linear(2, 2)
        self.classes_ = np.array([False, True])
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        return self

    def predict(self, X):
        with torch.no_grad():
            out = self.net_(torch.tensor(X.to_numpy(dtype=np.float32)))
        return self.classes_[out.argmax(1).numpy()]


def wrapped(ctx):
    df = _data(ctx)
    return TorchWrapper().fit(df[["x1", "x2"]], df["y"])
""",
    "helpers.py": """
import numpy as np


def clip3(x):
    return np.clip(x, -3, 3)
""",
    "user_func.py": _COMMON + """
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from train.helpers import clip3


def train(ctx):
    df = ctx.read("items", columns=["x1", "y"])
    model = Pipeline([("clip", FunctionTransformer(clip3, feature_names_out="one-to-one")),
                      ("clf", LogisticRegression())])
    return model.fit(df[["x1"]], df["y"])


class Streaming(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.batches_ = (i for i in range(3))  # a generator: skops cannot represent it
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def generator_holder(ctx):
    df = ctx.read("items", columns=["x1", "y"])
    return Pipeline([("m", Streaming())]).fit(df[["x1"]], df["y"])
""",
}


def items(n: int = ROWS, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 3, n)
    x2 = rng.normal(0, 1, n)
    x2[rng.random(n) < 0.1] = np.nan
    n1 = rng.integers(0, 101, n)
    cat = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    secret = rng.normal(0, 1, n)
    logit = 0.5 * x1 - 0.6 * np.nan_to_num(x2) + 0.01 * (n1 - 50) + (cat == "a") * 0.7 + secret
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    score = logit + rng.normal(0, 0.5, n)
    status = np.where(score < -0.7, "early", np.where(score < 0.7, "on_time", "late"))
    return pa.table({"id": np.arange(n, dtype=np.int64), "x1": x1, "x2": x2, "n1": n1,
                     "cat": cat, "secret": secret, "y": y, "status": status})


def make_family_repo(root: Path) -> Path:
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "train").mkdir()
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    for name, text in ENVIRONMENTS.items():
        (root / "environments" / f"{name}.yaml").write_text(text)
    (root / "train" / "__init__.py").write_text("")
    for name, code in TRAINING_FILES.items():
        (root / "train" / name).write_text(code)
    pq.write_table(items(), root / "data" / "items.parquet")
    return root
