"""`serving.stack: onnx`: convert at the environment's opset, check the op set, prove parity.

Conversion uses skl2onnx with one graph input per model input column (named
like the column, typed from the environment). The graph may only use the
default and `ai.onnx.ml` domains at or below the declared opset. Parity:
onnxruntime and scikit-learn must agree on the evaluation rows (labels
exactly, probabilities within 1e-3, float32 arithmetic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

__all__ = ["check_onnx"]

PROBA_TOLERANCE = 1e-3
ALLOWED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _diag(code: str, message: str, hints: list[str] | None = None) -> dict:
    return {"code": code, "message": message, "path": None, "line": None, "col": None,
            "severity": "error", "hints": hints or []}


def _column_types(env: Any, inputs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ds in env.datasets.values():
        for name, col in ds.columns.items():
            out.setdefault(name, col.dtype)
    return {name: out.get(name, "float64") for name in inputs}


def _feeds(X: Any, types: dict[str, str]) -> dict:
    feeds = {}
    for name, dtype in types.items():
        values = X[name]
        if dtype == "string":
            arr = values.astype(object).where(values.notna(), "").astype(str).to_numpy()
            feeds[name] = arr.reshape(-1, 1)
        elif dtype.startswith("int") or dtype == "bool":
            if values.isna().any():
                feeds[name] = values.astype("float64").to_numpy(np.float32).reshape(-1, 1)
            else:
                feeds[name] = values.astype("int64").to_numpy().reshape(-1, 1)
        else:
            feeds[name] = values.astype("float64").to_numpy(np.float32).reshape(-1, 1)
    return feeds


def _initial_types(types: dict[str, str], holdout: Any) -> list[tuple[str, Any]]:
    """One graph input per column: strings, int64 (integers without nulls in the evaluation
    rows), else float."""
    nullable_int = set()
    if holdout is not None:
        X = holdout[0]
        nullable_int = {n for n, t in types.items()
                        if (t.startswith("int") or t == "bool") and X[n].isna().any()}
    initial: list[tuple[str, Any]] = []
    for name, dtype in types.items():
        if dtype == "string":
            initial.append((name, StringTensorType([None, 1])))
        elif (dtype.startswith("int") or dtype == "bool") and name not in nullable_int:
            initial.append((name, Int64TensorType([None, 1])))
        else:
            initial.append((name, FloatTensorType([None, 1])))
    return initial


def _graph_problems(graph: Any, ops: list[tuple[str, str]], opset: int) -> list[dict]:
    """BE406: an opset above serving's, or an operator outside the standard domains."""
    problems = []
    for imp in graph.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > opset:
            problems.append(_diag("BE406", f"the ONNX graph needs opset {imp.version}, serving "
                                  f"supports {opset}"))
    for domain, op in ops:
        if domain not in ALLOWED_DOMAINS:
            problems.append(_diag("BE406", f"ONNX operator {domain}.{op} is outside the "
                                  "standard domains serving runs"))
    return problems


def check_onnx(model: Any, inputs: list[str] | None, env: Any, holdout: Any, out: Path) -> dict:
    opset = env.serving.opset
    libraries = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if not inputs:
        return {"summary": None, "libraries": libraries, "diagnostics": [_diag(
            "BE409", "cannot convert to ONNX: the model's input columns are unknown")]}
    types = _column_types(env, inputs)
    initial = _initial_types(types, holdout)
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    try:  # a named graph: skl2onnx's default name is a uuid4, new in every model.onnx
        graph = convert_sklearn(model, initial_types=initial, name="buildenv",
                                target_opset={"": opset, "ai.onnx.ml": min(3, max(1, opset - 14))
                                              if opset >= 15 else 1},
                                options=options)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"summary": None, "libraries": libraries, "diagnostics": [_diag(
            "BE405", f"cannot convert the model to ONNX opset {opset}: {message}",
            ["use steps skl2onnx can convert, or serve with stack: sklearn"])]}
    ops = sorted({(node.domain or "", node.op_type) for node in graph.graph.node})
    problems = _graph_problems(graph, ops, opset)
    payload = graph.SerializeToString(deterministic=True)
    (out / "model.onnx").write_bytes(payload)
    summary: dict = {"opset": opset, "ops": [f"{d or 'ai.onnx'}.{o}" for d, o in ops],
                     "file": "model.onnx", "parity": None}
    if holdout is None:
        problems.append({**_diag("BE410", "no evaluation rows: ONNX parity was not checked "
                                 "(the environment declares no label to evaluate)"),
                         "severity": "warning"})
        return {"summary": summary, "libraries": libraries, "diagnostics": problems}
    X = holdout[0].head(2000)
    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    outputs = session.run(None, _feeds(X, types))
    expected = np.asarray(model.predict(X))
    got = np.asarray(outputs[0]).reshape(-1)
    if expected.dtype == bool:
        got = got.astype(bool)
    elif np.issubdtype(expected.dtype, np.number):
        got = got.astype(expected.dtype)
    label_match = float(np.mean(got.astype(str) == expected.astype(str)))
    max_diff = None
    if hasattr(model, "predict_proba") and len(outputs) > 1:
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        max_diff = float(np.max(np.abs(np.asarray(outputs[1], dtype=np.float64) - proba)))
    summary["parity"] = {"rows": len(X), "label_agreement": round(label_match, 6),
                         "max_proba_diff": None if max_diff is None else float(f"{max_diff:.3g}")}
    if label_match < 0.999 or (max_diff is not None and max_diff > PROBA_TOLERANCE):
        problems.append(_diag(
            "BE407", "onnxruntime disagrees with scikit-learn on the evaluation rows: labels "
            f"agree on "
            f"{label_match:.2%} of {len(X)} rows, max probability difference {max_diff}",
            ["check for steps whose ONNX converter differs (string handling, float64)"]))
    return {"summary": summary, "libraries": libraries, "diagnostics": problems}
