"""The training process: hermetic side of `buildenv build` (`python -m buildenv.compile.runner REQ`).

Runs in a fresh interpreter with a scrubbed environment and fixed seeds. It
imports the user's module, calls `train(ctx)`, describes the fitted model
(inputs, ops), computes importances on the holdout, converts to ONNX when the
serving stack asks for it, saves the MLflow model, and writes `result.json`.
It judges nothing about the environment beyond what needs the live model:
verification against the multiverse happens in the parent, from the result.
An exception in user code is reported at the user's innermost frame.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _user_frame(exc: BaseException, root: Path, own: Path) -> tuple[str | None, int | None,
                                                                     list[str]]:
    frames = traceback.extract_tb(exc.__traceback__)
    user = []
    for frame in frames:
        path = Path(frame.filename).resolve()
        if path.is_relative_to(root) and not path.is_relative_to(own) and \
                ".venv" not in path.parts and "site-packages" not in path.parts:
            user.append(frame)
    if not user:
        return None, None, []
    last = user[-1]
    rel = Path(last.filename).resolve().relative_to(root).as_posix()
    trail = [f"{Path(f.filename).resolve().relative_to(root).as_posix()}:{f.lineno} in {f.name}"
             for f in user]
    return rel, last.lineno, trail


def _diag(code: str, message: str, path: str | None = None, line: int | None = None,
          hints: list[str] | None = None, severity: str = "error") -> dict:
    return {"code": code, "message": message, "path": path, "line": line, "col": None,
            "severity": severity, "hints": hints or []}


def _load_entry(root: Path, module_path: str, function: str):
    path = root / module_path
    name = module_path.removesuffix(".py").replace("/", ".")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return getattr(module, function)


def _importance(model: Any, X: Any, y: Any, seed: int, inputs: list[str]) -> dict | None:
    import numpy as np

    try:
        from sklearn.inspection import permutation_importance

        n = len(X)
        if n > 1000:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(n, 1000, replace=False))
            X = X.iloc[idx] if hasattr(X, "iloc") else X[idx]
            y = y.iloc[idx] if hasattr(y, "iloc") else np.asarray(y)[idx]
        result = permutation_importance(model, X, y, n_repeats=3, random_state=seed,
                                        n_jobs=1)
        raw = [max(0.0, float(v)) for v in result.importances_mean]
        total = sum(raw)
        shares = [v / total if total > 0 else 0.0 for v in raw]
        columns = list(X.columns) if hasattr(X, "columns") else inputs
        order = sorted(range(len(columns)), key=lambda i: (-shares[i], columns[i]))
        return {
            "method": "permutation",
            "features": {columns[i]: {"importance": round(shares[i], 6),
                                      "score_drop": round(raw[i], 6),
                                      "rank": order.index(i) + 1}
                         for i in range(len(columns))},
        }
    except Exception as exc:  # importance is advisory: never fail a build on it
        return {"method": "none", "error": f"{type(exc).__name__}: {exc}", "features": {}}


def _signature(env: Any, inputs: list[str] | None, label: Any):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from buildenv.compile.signature import colspec_type

    if not inputs:
        return None
    served: dict[str, Any] = {}
    for ds in env.datasets.values():
        for name, col in ds.columns.items():
            served.setdefault(name, col)
    if any(name not in served for name in inputs):
        return None
    schema = Schema([ColSpec(colspec_type(served[n]), n) for n in inputs])
    outputs = None
    if label is not None and label.dataset in env.datasets:
        col = env.datasets[label.dataset].columns.get(label.column)
        if col is not None:
            outputs = Schema([ColSpec(colspec_type(col), label.column)])
    return ModelSignature(inputs=schema, outputs=outputs)


def _preload() -> None:
    """Import MLflow while the user's training runs: it is needed only to save the model,
    and its import is seconds of mostly-Python work that overlaps well with numeric code."""
    import threading

    def work() -> None:
        try:
            import mlflow.sklearn  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="buildenv-preload", daemon=True).start()


def run(request: dict) -> dict:
    _preload()
    root = Path(request["root"]).resolve()
    own = Path(__file__).resolve().parents[1]  # the buildenv package
    seed = int(request["seed"])
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % (2**32))
    from buildenv.compile.context import BuildContext, ForbiddenRead
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment

    env = Environment.model_validate(request["env"])
    project = Project(root=root, data_root=Path(request["data_root"]) if request.get(
        "data_root") else None)
    ctx = BuildContext(env, seed, project)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import time

    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        fn = _load_entry(root, request["module_path"], request["function"])
        model = fn(ctx)
        timings["train"] = time.perf_counter() - started
    except ForbiddenRead as exc:
        path, line, trail = _user_frame(exc, root, own)
        return {"ok": False, "diagnostics": [_diag("BE303", str(exc), path, line,
                                                    [f"at {t}" for t in trail[:-1]])]}
    except Exception as exc:
        path, line, trail = _user_frame(exc, root, own)
        message = f"training raised {type(exc).__name__}: {exc}".strip()
        return {"ok": False, "diagnostics": [_diag("BE301", message, path, line,
                                                    [f"called from {t}" for t in trail[:-1]])],
                "transient": isinstance(exc, (OSError, MemoryError))}  # not cached
    if model is None or not hasattr(model, "predict"):
        return {"ok": False, "diagnostics": [_diag(
            "BE304", f"train() returned {type(model).__name__}, not a fitted model with "
            "predict()", request["module_path"], None)]}
    from buildenv.compile.introspect import describe

    info = describe(model)
    result: dict = {"ok": True, "diagnostics": [], "metrics": ctx.metrics, "params": ctx.params,
                    "reads": ctx.reads, **info}
    result["timings"] = timings
    holdout = ctx.holdout
    result["holdout"] = None
    mark = time.perf_counter()
    if holdout is not None:
        X, y = holdout
        result["holdout"] = {"rows": int(len(X))}
        if request.get("holdout_path"):
            _save_holdout(X, y, env, Path(request["holdout_path"]))
        result["importance"] = _importance(model, X, y, seed, info["inputs"] or [])
    else:
        result["importance"] = _own_importance(model, info["inputs"])
    timings["importance"] = time.perf_counter() - mark
    mark = time.perf_counter()
    serving = env.serving
    out = Path(request["out_dir"])
    import mlflow.sklearn

    signature = _signature(env, info["inputs"], env.label)
    requirements = list(serving.requirements) if serving else None
    mlflow.sklearn.save_model(model, str(out), signature=signature,
                              pip_requirements=requirements,
                              serialization_format="cloudpickle")
    timings["save"] = time.perf_counter() - mark
    mark = time.perf_counter()
    if serving is not None and serving.stack == "onnx":
        from buildenv.compile.onnx_parity import check_onnx

        onnx_result = check_onnx(model, info["inputs"], env, holdout, out)
        result["onnx"] = onnx_result["summary"]
        result["diagnostics"].extend(onnx_result["diagnostics"])
        result["libraries"].update(onnx_result.get("libraries", {}))
        timings["onnx"] = time.perf_counter() - mark
    return result


def _save_holdout(X: Any, y: Any, env: Any, path: Path) -> None:
    """Keep the held-out sample in the local build state (never in the artifact) so that
    `promote` can score candidate and champion on the same rows."""
    import pandas as pd

    frame = pd.DataFrame(X).reset_index(drop=True).copy()
    label = env.label.column if env.label is not None else "__label__"
    frame[f"__label__{label}"] = pd.Series(y).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _own_importance(model: Any, inputs: list[str] | None) -> dict | None:
    values = getattr(model, "feature_importances_", None)
    if values is None or not inputs or len(values) != len(inputs):
        return {"method": "none", "features": {}}
    total = float(sum(values)) or 1.0
    order = sorted(range(len(inputs)), key=lambda i: (-values[i], inputs[i]))
    return {"method": "model", "features": {
        inputs[i]: {"importance": round(float(values[i]) / total, 6), "rank": order.index(i) + 1}
        for i in range(len(inputs))}}


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(argv[0]).read_text())
    result_path = Path(request["result"])
    try:
        result = run(request)
    except BaseException as exc:  # a bug in buildenv, or a crash in a library
        result = {"ok": False, "diagnostics": [_diag(
            "BE305", f"training process failed: {type(exc).__name__}: {exc}", None, None,
            [line.rstrip() for line in traceback.format_exc().splitlines()[-6:]])]}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
