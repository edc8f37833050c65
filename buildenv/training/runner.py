"""The training process: hermetic side of `buildenv build` (`python -m buildenv.training.runner REQ`).

Runs in a fresh interpreter with a scrubbed environment and fixed seeds. It
imports the user's module, calls `train(ctx)` (every read goes through the data
gate, verified against the lock's pins), describes the fitted model (inputs,
ops), scores it on the environment's evaluation rows (read again through the
gate, never written anywhere), computes importances on them, converts to ONNX
when the serving stack asks for it, saves the MLflow model, and writes
`result.json`. It judges nothing about the environment beyond what needs the
live model: verification against the multiverse happens in the parent.
An exception in user code is reported at the user's innermost frame; when the
training has read a restricted dataset, its message is withheld. Sandboxed, the runner confines
itself before anything else (`confinement.Guard`), and what the sandbox refused is reported as
such (BE322-BE327).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# The sandbox's side of the runner is imported and applied first: Landlock and seccomp bind only
# the threads started after them (ctypes and the standard library, no thread of their own).
from buildenv.core.confine import ConfinementError
from buildenv.training.confinement import Guard
from buildenv.training.user_frames import exception_frame as _user_frame

# Deferred imports (buildenv, numpy, mlflow, sklearn): the training process starts importing mlflow
# in a thread first (`_preload`), and an import that fails inside `run` becomes a BE305 result
# instead of a process that dies before writing one.

__all__ = ["main"]


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

    from buildenv.training.signature import colspec_type

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
    label_set = env.label_set()
    if label_set is not None:
        outputs = Schema([ColSpec("string", label_set.taxonomy.name)])
    elif label is not None and label.dataset in env.datasets:
        col = env.datasets[label.dataset].columns.get(label.column)
        if col is not None:
            outputs = Schema([ColSpec(colspec_type(col), label.column)])
    return ModelSignature(inputs=schema, outputs=outputs)


def _preload() -> None:
    """Import MLflow while the user's training runs: it is needed only to save the model,
    and its import is seconds of mostly-Python work that overlaps well with numeric code."""
    def work() -> None:
        try:
            import mlflow.sklearn  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="buildenv-preload", daemon=True).start()


def run(request: dict, guard: Guard | None = None) -> dict:
    _preload()
    root = Path(request["root"]).resolve()
    own = Path(__file__).resolve().parents[1]  # the buildenv package
    seed = int(request["seed"])
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % (2**32))
    from buildenv.core.project import Project
    from buildenv.data.gate.errors import GateError
    from buildenv.env.spec import Environment
    from buildenv.training.context import BuildContext

    env = Environment.model_validate(request["env"])
    project = Project(root=root, data_root=Path(request["data_root"]) if request.get(
        "data_root") else None)
    pins = dict(request.get("pins") or {})
    label_pins = dict(request.get("label_pins") or {})
    manifests = _manifests(request)
    ctx = BuildContext(env, seed, project, pins, label_pins, manifests)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    timings: dict[str, float] = {}
    model, failed = _train(ctx, request, root, own, timings, guard)
    if failed is not None:
        return failed
    from buildenv.training.introspect import describe

    info = describe(model)
    result: dict = {"ok": True, "diagnostics": [], "metrics": ctx.metrics,
                    "params": _safe_params(ctx), "reads": ctx.reads, **info}
    result["timings"] = timings
    if ctx.deprecated_holdout:
        result["diagnostics"].append(_diag(
            "BE306", "ctx.set_holdout is deprecated and ignored: the environment owns "
            "evaluation", request["module_path"], None, severity="warning",
            hints=["declare the held-out rows in the environment (`evaluation:`) and return "
                   "the fitted model; the build scores it"]))
    mark = time.perf_counter()
    rows = None
    if env.label_set() is not None:
        try:
            label_table = ctx.label_table()
        except GateError as exc:
            return _refused([*ctx.gate_errors, exc])
        result["labels"] = _label_summary(ctx)
    if env.label is not None:
        release = SimpleNamespace(project=project, pins=pins, key=request.get("release_key"))
        rows, evaluation, problems = _evaluate(
            project, env, pins, model, info["inputs"],
            label_table if env.label_set() is not None else None, manifests, release)
        result["evaluation"] = evaluation
        result["diagnostics"].extend(problems)
        if any(d["severity"] == "error" for d in problems):
            result["ok"] = False
            return result
        timings["evaluate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    if rows is not None:
        X = rows.frame[info["inputs"]] if info["inputs"] else rows.frame
        result["importance"] = _importance(model, X, rows.labels, seed, info["inputs"] or [])
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
        from buildenv.training.onnx_parity import check_onnx

        sample = (X, rows.labels) if rows is not None else None
        onnx_result = check_onnx(model, info["inputs"], env, sample, out)
        result["onnx"] = onnx_result["summary"]
        result["diagnostics"].extend(onnx_result["diagnostics"])
        result["libraries"].update(onnx_result.get("libraries", {}))
        timings["onnx"] = time.perf_counter() - mark
    return result


def _train(ctx: Any, request: dict, root: Path, own: Path, timings: dict[str, float],
           guard: Guard | None) -> tuple[Any, dict | None]:
    """Call the user's `train(ctx)`: the fitted model, or the result that reports why not."""
    from buildenv.data.gate.errors import GateError
    from buildenv.training.context import ForbiddenRead

    started = time.perf_counter()
    try:
        fn = _load_entry(root, request["module_path"], request["function"])
        try:
            model = fn(ctx)
        finally:
            ctx.finish()  # scans the training left open are verified before anything is used
        timings["train"] = time.perf_counter() - started
    except GateError as exc:
        return None, _refused([*ctx.gate_errors, exc])
    except ForbiddenRead as exc:
        path, line, trail = _user_frame(exc, root, own)
        return None, {"ok": False, "diagnostics": [_diag("BE303", str(exc), path, line,
                                                          [f"at {t}" for t in trail[:-1]])]}
    except Exception as exc:
        if ctx.gate_errors:
            return None, _refused(ctx.gate_errors)
        denied = guard.explain(exc, bool(ctx.restricted_reads)) if guard else None
        if denied is not None:  # the sandbox refused it: deterministic, cached like any error
            return None, {"ok": False, "diagnostics": [denied]}
        path, line, trail = _user_frame(exc, root, own)
        message = f"training raised {type(exc).__name__}: {exc}".strip()
        if ctx.restricted_reads:
            message = (f"training raised {type(exc).__name__} (message withheld: the training "
                       f"read restricted dataset(s) {', '.join(sorted(ctx.restricted_reads))})")
        return None, {"ok": False, "diagnostics": [_diag(
            "BE301", message, path, line, [f"called from {t}" for t in trail[:-1]])],
            "transient": isinstance(exc, (OSError, MemoryError))}  # not cached
    if ctx.gate_errors:  # caught by the training: the model saw unverified data
        return None, _refused(ctx.gate_errors)
    bypass = guard.swallowed(bool(ctx.restricted_reads)) if guard else []
    if bypass:  # caught by the training: it tried to read data around the gate
        return None, {"ok": False, "diagnostics": bypass}
    if model is None or not hasattr(model, "predict"):
        return None, {"ok": False, "diagnostics": [_diag(
            "BE304", f"train() returned {type(model).__name__}, not a fitted model with "
            "predict()", request["module_path"], None)]}
    return model, None


def _refused(errors: list) -> dict:
    """The training read bytes the gate refused: nothing it produced is used."""
    seen: set[str] = set()
    diagnostics = []
    for exc in errors:
        d = exc.diagnostic
        if d.message not in seen:
            seen.add(d.message)
            diagnostics.append(d.to_json())
    return {"ok": False, "diagnostics": diagnostics}


def _safe_params(ctx: Any) -> dict[str, str]:
    """Params as logged, unless they quote a restricted value the training read."""
    if not ctx.restricted_reads:
        return ctx.params
    if not ctx.redaction_complete:
        return {k: "[withheld: restricted data]" for k in ctx.params}
    return {ctx.redactor.clean(k): ctx.redactor.clean(v) for k, v in ctx.params.items()}


def _label_summary(ctx: Any) -> dict:
    """How the label set's labels were obtained, for the lineage (counts only)."""
    resolution = ctx.label_sets.resolve(ctx.env.label.labels)
    _, labels = ctx._labeled_rows()
    return {"label_set": ctx.env.label.labels, **resolution.summary(),
            "training_rows": len(labels)}


def _manifests(request: dict) -> dict:
    from buildenv.data.lock.manifest import Manifest

    return {name: Manifest.from_json(data)
            for name, data in (request.get("manifests") or {}).items()}


def _evaluate(project: Any, env: Any, pins: dict, model: Any, inputs: list[str] | None,
              labels: Any = None, manifests: dict | None = None, release: Any = None
              ) -> tuple[Any, dict | None, list[dict]]:
    """Score the model on the environment's evaluation rows, read through the gate: overall,
    and on every slice with bootstrap intervals (`training.slice_run`)."""
    from buildenv.data.evaluation import evaluation_rows
    from buildenv.data.gate.errors import GateError
    from buildenv.data.gate.gate import Gate
    from buildenv.training.scoring import ScoringError, metrics, predict
    from buildenv.training.slice_run import evaluate_slices, slice_attributes

    served = {c for ds in env.datasets.values() for c, col in ds.columns.items() if col.serving}
    if inputs and not set(inputs) <= served:
        return None, None, []  # it cannot serve anywhere here: verification says so (BE401)
    gate = Gate(project, env, "evaluate", pins=pins, manifests=manifests or {})
    try:
        rows = evaluation_rows(gate, env, labels, attributes=slice_attributes(env))
    except GateError as exc:
        return None, None, [exc.diagnostic.to_json()]
    restricted = any(env.restricted(d) for d in rows.digests)
    summary = {**rows.method, "rows": rows.rows, "metrics": {}}
    try:
        outputs = predict(model, rows.frame, rows.labels,
                          SimpleNamespace(classes=env.label_classes()), inputs, restricted)
        summary["metrics"] = {k: round(v, 6) for k, v in metrics(outputs).items()}
    except ScoringError as exc:
        return None, summary, [_diag(
            "BE411", f"the model cannot be scored on {rows.describe()}: {exc}", None, None,
            hints=["every model input must be a served column of the evaluation rows; "
                   "declare `evaluation.join` for columns of other datasets"])]
    found, problems = evaluate_slices(env, rows, outputs, restricted, release)
    summary.update(found)
    return rows, summary, problems


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
    guard = None
    try:
        guard = Guard.enter(request.get("sandbox"), Path(request["root"]).resolve())
        result = run(request, guard)
    except ConfinementError as exc:
        result = {"ok": False, "diagnostics": [_diag(
            "BE326", f"the sandbox could not confine the training: {exc}", None, None,
            ["`buildenv doctor` checks this machine's sandbox"])]}
    except BaseException as exc:  # a bug in buildenv, or a crash in a library
        # Frames only: messages and source lines may quote data (restricted or not).
        frames = [f"at {Path(f.filename).name}:{f.lineno} in {f.name}"
                  for f in traceback.extract_tb(exc.__traceback__)[-5:]]
        result = {"ok": False, "diagnostics": [_diag(
            "BE305", f"training process failed: {type(exc).__name__}", None, None, frames)]}
    left = guard.reap() if guard is not None else None
    if left is not None:
        result.setdefault("diagnostics", []).append({**left, "path": request["module_path"]})
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
