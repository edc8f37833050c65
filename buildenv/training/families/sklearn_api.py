"""scikit-learn-API models: estimators and pipelines, XGBoost's and LightGBM's wrappers included.

Inputs are the names the model was fitted on (`feature_names_in_`). Classes: the model's own,
unless it predicts integer codes `0..k-1` for an environment whose classes are not those
integers (XGBoost insists on encoded labels): then code `i` is the environment's `classes[i]`.
ONNX: skl2onnx, with onnxmltools' converters registered for XGBoost and LightGBM models; one
graph input per column, `zipmap` off (probabilities as a tensor), a fixed graph name and sorted
opset imports, so the same model gives the same bytes.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from buildenv.env.spec import Environment
from buildenv.training.families.base import (
    Family,
    FamilyError,
    Problem,
    environment_classes,
    library_versions,
    repository_modules,
)
from buildenv.training.introspect import (
    foreign_parts,
    model_inputs,
    public_path,
    walk,
    walk_ops,
)
from buildenv.training.onnx_inventory import ml_opset
from buildenv.training.skops_format import dumps

# Deferred imports (skl2onnx, onnx, onnxmltools, xgboost, lightgbm): conversion runs for the
# onnx stack only, and the XGBoost and LightGBM converters only when those libraries are loaded.

__all__ = ["SklearnFamily"]


class SklearnFamily(Family):
    def __init__(self, model: Any, env: Environment) -> None:
        raw = getattr(model, "classes_", None)
        super().__init__(model=model, inputs=model_inputs(model),
                         task="classification" if raw is not None else "regression",
                         kind="sklearn", model_class=public_path(model))
        self.raw_classes = list(raw) if raw is not None else None
        if self.raw_classes is not None:
            self.classes, self.encoded_labels = _classes(self.raw_classes,
                                                         environment_classes(env))
        for where, what in foreign_parts(model):
            self.problems.append(Problem(
                "BE418", f"{what} sits inside the model at {where}: only the wrapper class is "
                "an operation buildenv can verify, and the model cannot be loaded without the "
                "repository's code",
                ("return buildenv.TorchModel(module, inputs=[...], output=...) for a PyTorch "
                 "module: it is converted to ONNX and its operators are checked",)))

    def predict(self, frame: Any) -> Any:
        out = self.model.predict(self._x(frame))
        if self.encoded_labels:
            return np.asarray(self.classes, dtype=object)[np.asarray(out).astype(np.int64)]
        return out

    def predict_proba(self, frame: Any) -> Any:
        return self.model.predict_proba(self._x(frame))

    @property
    def has_proba(self) -> bool:
        return self.is_classifier and hasattr(self.model, "predict_proba")

    def _x(self, frame: Any) -> Any:
        return frame[self.inputs] if self.inputs else frame

    def ops(self) -> list[dict]:
        return walk_ops(self.model)

    def libraries(self) -> dict[str, str]:
        modules = {"sklearn"} | {type(est).__module__.split(".")[0] for est, _ in walk(self.model)}
        return library_versions(sorted(modules))

    def code_modules(self, root: Path) -> list[str]:
        return repository_modules([type(est) for est, _ in walk(self.model)], root)

    def onnx_encoded_labels(self) -> bool:
        # skl2onnx writes bool classes as the integers 0/1: positions into [False, True]
        raw = self.raw_classes or []
        return self.encoded_labels or (bool(raw) and all(
            isinstance(c, bool) or type(c).__name__ == "bool_" for c in raw))

    def to_onnx(self, types: dict[str, str], opset: int) -> Any:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import (
            FloatTensorType,
            Int64TensorType,
            StringTensorType,
        )

        if not self.inputs:
            raise FamilyError("BE409", "cannot convert to ONNX: the model's input columns are "
                              "unknown")
        _register_converters()
        model = _without_booster_names(self.model)
        by_column = _takes_columns(model)
        if by_column:
            tensor = {"string": StringTensorType, "int64": Int64TensorType,
                      "float": FloatTensorType}
            initial = [(name, tensor[types[name]]([None, 1])) for name in self.inputs or []]
        else:  # the estimator takes one matrix: convert it so, then feed it column by column
            text = [name for name in self.inputs if types[name] == "string"]
            if text:
                raise FamilyError("BE405", f"cannot convert {self.model_class} to ONNX: it "
                                  f"reads string column(s) {', '.join(text)} without a "
                                  "ColumnTransformer to encode them",
                                  ("encode them in a Pipeline(ColumnTransformer(...), ...)",))
            initial = [(_MATRIX, FloatTensorType([None, len(self.inputs)]))]
        options = {id(model): {"zipmap": False}} if self.has_proba else None
        try:
            graph = convert_sklearn(model, name="model", initial_types=initial,
                                    target_opset={"": opset, "ai.onnx.ml": ml_opset(opset)},
                                    options=options)
        except Exception as exc:
            reason = str(exc).strip()
            first = reason.splitlines()[0][:300] if reason else type(exc).__name__
            raise FamilyError(
                "BE405", f"cannot convert {self.model_class} to ONNX opset {opset}: {first}",
                ("use steps the converters (skl2onnx, onnxmltools) can represent, or serve "
                 "with stack: sklearn",)) from None
        if not by_column:
            _columns_to_matrix(graph, self.inputs)
        imports = sorted((i.domain, i.version) for i in graph.opset_import)
        del graph.opset_import[:]
        for domain, version in imports:
            graph.opset_import.add(domain=domain, version=version)
        return graph

    def save_native(self, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.skops").write_bytes(dumps(self.model))
        return ["model.skops"]


def _classes(raw: list, declared: list | None) -> tuple[list, bool]:
    """(classes as environment values, whether predictions are positions into them)."""
    plain = [c.item() if isinstance(c, np.generic) else c for c in raw]
    codes = all(isinstance(c, int) and not isinstance(c, bool) for c in plain) \
        and plain == list(range(len(plain)))
    if declared and codes and len(plain) <= len(declared) and not all(
            isinstance(c, int) and not isinstance(c, bool) for c in declared):
        return list(declared[:len(plain)]), True
    return plain, False


_MATRIX = "buildenv_matrix"  # the single input of an estimator fed a matrix


def _takes_columns(model: Any) -> bool:
    """Whether the model's first step routes named columns (a ColumnTransformer): then
    skl2onnx converts it with one input per column. Anything else takes one matrix."""
    while isinstance(model, Pipeline) and model.steps:
        model = model.steps[0][1]
    return isinstance(model, ColumnTransformer)


def _columns_to_matrix(graph: Any, columns: list[str]) -> None:
    """Give a graph converted with one matrix input one `[rows, 1]` float input per column,
    concatenated in order into that matrix: every buildenv graph takes columns."""
    from onnx import TensorProto, helper

    del graph.graph.input[:]
    graph.graph.input.extend(helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1])
                             for c in columns)
    nodes = list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend([helper.make_node("Concat", list(columns), [_MATRIX], axis=1,
                                              name="columns"), *nodes])


_REGISTERED = False


def _register_converters() -> None:
    """onnxmltools' converters for the XGBoost and LightGBM wrappers, when those are loaded."""
    global _REGISTERED
    if _REGISTERED or not ({"xgboost", "lightgbm"} & set(sys.modules)):
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if "xgboost" in sys.modules:
        # models extra: in a training's runtime only when it uses XGBoost (BUILD's overrides)
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import (
            convert_xgboost,  # pants: no-infer-dep (on the name's line: where Pants reads it)
        )
        from xgboost import XGBClassifier, XGBRegressor  # pants: no-infer-dep

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier",
                                    calculate_linear_classifier_output_shapes, convert_xgboost,
                                    options=options)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor",
                                    calculate_linear_regressor_output_shapes, convert_xgboost)
    if "lightgbm" in sys.modules:
        from lightgbm import LGBMClassifier, LGBMRegressor  # pants: no-infer-dep
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
            convert_lightgbm,  # pants: no-infer-dep (on the name's line: where Pants reads it)
        )

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier",
                                    calculate_linear_classifier_output_shapes, convert_lightgbm,
                                    options=options)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor",
                                    calculate_linear_regressor_output_shapes, convert_lightgbm,
                                    options={"split": None})
    _REGISTERED = "xgboost" in sys.modules and "lightgbm" in sys.modules


def _without_booster_names(model: Any) -> Any:
    """XGBoost's converter reads features as `f0, f1, ...`: a booster fitted on a DataFrame
    keeps the column names and fails to convert. A copy without them converts to the same
    trees (the original keeps its names)."""
    boosters = [est for est, _ in walk(model) if hasattr(est, "get_booster")
                and type(est).__module__.startswith("xgboost")]
    if not boosters or all(est.get_booster().feature_names is None for est in boosters):
        return model
    clone = copy.deepcopy(model)
    for est, _ in walk(clone):
        if hasattr(est, "get_booster") and type(est).__module__.startswith("xgboost"):
            est.get_booster().feature_names = None
    return clone
