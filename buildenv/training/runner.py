"""The training process: hermetic side of `buildenv build` (`python -m buildenv.training.runner REQ`).

Runs in a fresh interpreter with a scrubbed environment and fixed seeds. It imports the user's
module and, unless the training opts out, runs `train(ctx)` first on a sample of its rows (the
pre-check: `precheck.py`) and stops there when the model's inputs or operations would be
refused. Then the full `train(ctx)` (every read through the data gate, verified against the
lock's pins); the returned model is adopted by its family (`families/`), scored on the
environment's evaluation rows (read again through the gate, never written anywhere), converted
to ONNX for the `onnx` stack (its operator inventory recorded), saved as serving will load it
(`served_artifact.py`), loaded back that way for parity with the trained model, permutation
importance and latency, and `result.json` is written. It judges nothing about the environment
beyond what needs the live model: verification against the multiverse happens in the parent.
An exception in user code is reported at the user's innermost frame; when the training has read
a restricted dataset, its message is withheld. Sandboxed, the runner confines itself before
anything else (`confinement.Guard`), and what the sandbox refused is reported as such
(BE322-BE327), for the pre-check's run and the full one alike.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# The sandbox's side of the runner is imported and applied first: Landlock and seccomp bind only
# the threads started after them (ctypes and the standard library, no thread of their own).
from buildenv.core.confine import ConfinementError
from buildenv.core.leave import leave
from buildenv.toolchain.bytecode import uncached_sources
from buildenv.training import skops_table
from buildenv.training.beside import Beside, Judge, preload, preloaded
from buildenv.training.code_reads import CodeReads
from buildenv.training.confinement import Guard
from buildenv.training.user_code import diag as _diag
from buildenv.training.user_code import load_entry as _load_entry
from buildenv.training.user_code import manifests as _manifests
from buildenv.training.user_code import type_name
from buildenv.training.user_frames import exception_frame as _user_frame

# Deferred imports (buildenv, numpy, mlflow, sklearn): what the saving needs is imported in a
# thread when the full fit starts (`beside.preload`; MLflow only when MLflow itself must write
# the model's files), and an import that fails inside `run` becomes a BE305 result instead of a
# process that dies before writing one. The model families' libraries are
# imported only for a model of that family.

__all__ = ["main"]


def _signature(env: Any, inputs: list[str] | None, label: Any):
    from buildenv.training.signature import served_signature

    return served_signature(env, inputs, label)


class _Failed(Exception):
    """A finished result that is a failure (carries the result dict)."""

    def __init__(self, result: dict) -> None:
        super().__init__("failed")
        self.result = result


def run(request: dict, guard: Guard | None = None) -> dict:
    from buildenv.env.spec import Environment
    from buildenv.training.families import torch_export_worker

    env = Environment.model_validate(request["env"])
    skops_table.offer(request.get("skops_types"))
    try:
        return _run(request, env, guard)
    except _Failed as failed:
        return failed.result
    finally:
        torch_export_worker.stop()


def _run(request: dict, env: Any, guard: Guard | None) -> dict:
    root = Path(request["root"]).resolve()
    seed = int(request["seed"])
    threads = int(request.get("threads") or 1)
    from buildenv.core.project import Project
    from buildenv.env.spec import OnnxServing
    from buildenv.training import precheck, torch_setup
    from buildenv.training.context import BuildContext
    from buildenv.training.families import torch_export_worker

    _seed(seed)
    serving = env.serving
    torch_setup.install(seed, threads, then=lambda: torch_export_worker.start(
        seed, threads, serving.opset) if isinstance(serving, OnnxServing) else None)
    project = Project(root=root, data_root=Path(request["data_root"]) if request.get(
        "data_root") else None)
    pins = dict(request.get("pins") or {})
    manifests = _manifests(request)
    ctx = BuildContext(env, seed, project, pins, dict(request.get("label_pins") or {}),
                       manifests)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    timings: dict[str, float] = {}
    fn = _call(ctx, root, guard, lambda: _load_entry(root, request["module_path"],
                                                     request["function"]))
    judge, forked = None, None
    if precheck.wanted(request, env):
        mark = time.perf_counter()
        verdict = _precheck(ctx, root, guard, env, fn, request)
        forked = verdict.get("forked")  # then this is the fork's cost: it runs beside the fit
        timings["precheck"] = time.perf_counter() - mark
        if verdict.get("refused"):
            return {**verdict["result"], "timings": timings}
        ctx.begin_full_run()
        _seed(seed)
        torch_setup.reseed()
        result_precheck = verdict.get("summary")
        judge = Judge(verdict.get("deferred"), env)
    else:
        result_precheck = None
    mark = time.perf_counter()
    try:
        if judge is None:
            preload(env)
            model = _call(ctx, root, guard, lambda: fn(ctx))
        else:
            model, decided = judge.alongside(lambda: _call(ctx, root, guard, lambda: fn(ctx)))
            if decided is not None and decided.get("failed"):
                return dict(decided["failed"])
            if decided is not None and decided.get("refused"):
                return {**decided["result"], "timings": timings}
            if decided is not None:
                result_precheck = decided.get("summary")
    finally:
        if forked is not None:
            forked.stop()  # the full run failed first, or the verdict is in: it has ended
    ctx.finish_full_run()
    timings["train"] = time.perf_counter() - mark
    if ctx.gate_errors:  # caught by the training: the model saw unverified data
        return _refused(ctx.gate_errors)
    family = _adopt(model, env, request["module_path"], ctx, root)
    evaluation = None
    if env.label_set() is None and family.kind != "torch":
        # nothing it does touches ctx: it may run beside describing and shipping the model
        evaluation = _Evaluation(project, env, pins, family, ctx, manifests, request)
    result = _describe(family, ctx, root, request)
    if not _ship(family, env, root, request, result):
        return _without(evaluation, result)
    result["timings"] = timings
    if result_precheck is not None:
        result["precheck"] = result_precheck
    if ctx.deprecated_holdout:
        result["diagnostics"].append(_diag(
            "BE306", "ctx.set_holdout is deprecated and ignored: the environment owns "
            "evaluation", request["module_path"], None, severity="warning",
            hints=["declare the held-out rows in the environment (`evaluation:`) and return "
                   "the fitted model; the build scores it"]))
    from buildenv.env.serving_rules import refused

    if refused(env, family.inputs, family.kind, result["ops"], None):
        return _without(evaluation, result)  # verification says why; nothing is evaluated
    _emit(family, env, ctx, project, pins, manifests, request, result, timings, evaluation)
    return result


def _precheck(ctx: Any, root: Path, guard: Guard | None, env: Any, fn: Any,
              request: dict) -> dict:
    """The pre-check's verdict, or `{"deferred": ...}` to take beside the full fit: from a
    forked process where that is safe (`precheck_fork`; then `forked` is it), else run here,
    its conversion deferred."""
    from buildenv.training import precheck, precheck_fork

    def work() -> dict:  # in the forked process: every way it ends as a JSON-able verdict
        try:
            return dict(_call(ctx, root, guard, lambda: precheck.run(ctx, env, fn, request)))
        except _Failed as failed:
            return {"failed": failed.result}
        except BaseException as exc:
            return {"failed": _internal_failure(exc)}

    forked = precheck_fork.start(env, int(request.get("threads") or 1), work)
    if forked is None:
        return dict(_call(ctx, root, guard, lambda: precheck.run(ctx, env, fn, request,
                                                                 defer=True)))
    return {"deferred": forked.verdict, "forked": forked}


def _without(evaluation: _Evaluation | None, result: dict) -> dict:
    """`result`, once an evaluation started early has stopped (what it found is dropped: the
    build stops before evaluating)."""
    if evaluation is not None:
        evaluation.drop()
    return result


def _seed(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))


def _call(ctx: Any, root: Path, guard: Guard | None, work: Any) -> Any:
    """Run user code; its failures as diagnostics at the user's line (what the sandbox
    refused it, as such)."""
    from buildenv.data.gate.errors import GateError
    from buildenv.training.context import ForbiddenRead
    from buildenv.training.families.torch_contract import ModelContractError

    own = Path(__file__).resolve().parents[1]  # the buildenv package
    try:
        try:
            done = work()
        finally:
            ctx.finish()  # scans the training left open are verified before anything is used
    except GateError as exc:
        raise _Failed(_refused([*ctx.gate_errors, exc])) from None
    except ForbiddenRead as exc:
        path, line, trail = _user_frame(exc, root, own)
        raise _Failed({"ok": False, "diagnostics": [_diag("BE303", str(exc), path, line, [
            f"at {t}" for t in trail[:-1]])]}) from None
    except ModelContractError as exc:
        path, line, trail = _user_frame(exc, root, own)
        raise _Failed({"ok": False, "diagnostics": [_diag(
            "BE415", str(exc), path, line, [f"called from {t}" for t in trail[:-1]])]}) from None
    except Exception as exc:
        if ctx.gate_errors:
            raise _Failed(_refused(ctx.gate_errors)) from None
        denied = guard.explain(exc, bool(ctx.restricted_reads)) if guard else None
        if denied is not None:  # the sandbox refused it: deterministic, cached like any error
            raise _Failed({"ok": False, "diagnostics": [denied]}) from None
        path, line, trail = _user_frame(exc, root, own)
        message = f"training raised {type(exc).__name__}: {exc}".strip()
        if ctx.restricted_reads:
            message = (f"training raised {type_name(exc, True)} (message withheld: the training "
                       f"read restricted dataset(s) {', '.join(sorted(ctx.restricted_reads))})")
        raise _Failed({"ok": False, "diagnostics": [_diag(
            "BE301", message, path, line, [f"called from {t}" for t in trail[:-1]])],
            "transient": isinstance(exc, (OSError, MemoryError))}) from None  # not cached
    bypass = guard.swallowed(bool(ctx.restricted_reads)) if guard else []
    if bypass:  # caught by the training: it tried to read data around the gate
        raise _Failed({"ok": False, "diagnostics": bypass})
    return done


def _adopt(model: Any, env: Any, module_path: str, ctx: Any, root: Path) -> Any:
    from buildenv.training.families import FamilyError, adopt

    try:
        return adopt(model, env)
    except FamilyError as exc:
        p = exc.problem
        message = p.message
        if ctx.restricted_reads and p.code == "BE415":
            message = message.split(":", 1)[0] + " (details withheld: the training read " \
                "restricted data)"
        raise _Failed({"ok": False, "diagnostics": [_diag(p.code, message, module_path, None,
                                                          p.hints)]}) from None


def _describe(family: Any, ctx: Any, root: Path, request: dict) -> dict:
    """What the model is: the part of the result verification judges."""
    return {"ok": True, "diagnostics": [_diag(p.code, p.message, request["module_path"], None,
                                              p.hints, p.severity) for p in family.problems],
            "metrics": ctx.metrics, "params": _safe_params(ctx), "reads": ctx.reads,
            "read_sites": ctx.read_sites, "inputs": family.inputs, "ops": family.ops(),
            "family": family.kind, "model_class": family.model_class,
            "task": family.task, "classes": _plain(family.classes),
            "libraries": family.libraries(), "code_modules": family.code_modules(root)}


def _native(family: Any, env: Any) -> bool:
    """Whether the artifact holds the model itself (not only its ONNX graph): then loading it
    imports the model's classes, and their code must ship with it."""
    from buildenv.env.spec import OnnxServing

    serving = env.serving
    return not isinstance(serving, OnnxServing) or serving.format == "onnx+native"


def _ship(family: Any, env: Any, root: Path, request: dict, result: dict) -> bool:
    """Sort what loading the native model imports into libraries (recorded, pinned) and
    repository code (shipped); False when a class cannot be shipped (BE356 in `result`)."""
    if not _native(family, env) or family.kind != "sklearn":
        return True  # an ONNX graph needs no code; a PyTorch state dict only tensors
    from buildenv.training.shipping import model_needs

    needs = model_needs(family.model, root, request["module_path"])
    if needs.problems:
        result["ok"] = False
        result["diagnostics"].extend(needs.problems)
        return False
    result["libraries"] = dict(sorted({**needs.libraries, **result["libraries"]}.items()))
    result["code_modules"] = sorted({*result["code_modules"], *needs.code_modules})
    return True


def _plain(values: Any) -> Any:
    if values is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in values]


def _emit(family: Any, env: Any, ctx: Any, project: Any, pins: dict, manifests: dict,
          request: dict, result: dict, timings: dict,
          evaluation: _Evaluation | None = None) -> None:
    """Evaluate, convert, save, and judge the served model against the trained one. The
    fit has left the cores free: evaluation runs beside the conversion and the save
    (`Beside`; for a PyTorch model, whose export traces with process-wide state, only beside
    the save); once the model is loaded back, permutation importance starts as soon as the
    evaluation rows are read and parity as soon as the evaluation is done (`Judged`). What
    each side finds is merged in the serial order, so the result is the same as one step
    after the other."""
    from buildenv.env.spec import OnnxServing
    from buildenv.training import importance as importance_of
    from buildenv.training.families import FamilyError
    from buildenv.training.judging import Judged
    from buildenv.training.served_artifact import convert, load_served, save_served
    from buildenv.training.shipping import stage_code

    module_path = request["module_path"]
    root = project.root

    def failed(exc: FamilyError) -> _Failed:
        p = exc.problem
        result["diagnostics"].append(_diag(p.code, p.message, module_path, None, p.hints))
        result["ok"] = False
        return _Failed(result)

    preloaded()
    if evaluation is None:
        evaluation = _Evaluation(project, env, pins, family, ctx, manifests, request)
    if family.kind == "torch":
        evaluation.settle(result, timings)
    serving = env.serving
    proto = None
    if isinstance(serving, OnnxServing):
        mark = time.perf_counter()
        from buildenv.training.onnx_inventory import inventory

        try:
            proto = convert(family, env)
        except FamilyError as exc:
            evaluation.settle(result, timings)
            raise failed(exc) from None
        onnx_part = {"file": "model.onnx", "opset": serving.opset,
                     "inventory": inventory(proto).to_json()}
        converters = _converter_versions(family)
        timings["onnx"] = time.perf_counter() - mark
        evaluation.settle(result, timings)
        result["onnx"] = onnx_part
        result["libraries"].update(converters)
    from buildenv.env.serving_rules import forbidden_operators, version_excess

    if forbidden_operators(env, (result.get("onnx") or {}).get("inventory")) or \
            version_excess(env, (result.get("onnx") or {}).get("inventory")):
        evaluation.settle(result, timings)
        return  # refused by verification: saving and parity would be wasted
    mark = time.perf_counter()
    out = Path(request["out_dir"])
    try:
        with tempfile.TemporaryDirectory(prefix="buildenv-code-") as stage:
            code_paths = stage_code(root, result["code_modules"], Path(stage), module_path) \
                if _native(family, env) else []
            saved = save_served(family, env, out, _signature(env, family.inputs, env.label),
                                proto, code_paths)
    except FamilyError as exc:
        evaluation.settle(result, timings)
        raise failed(exc) from None
    timings["save"] = time.perf_counter() - mark
    served, loading = None, None
    if saved.descriptor is not None:
        try:
            served = load_served(out, saved, env, int(request.get("threads") or 1))
        except FamilyError as exc:
            loading = exc
    judged = Judged(served, evaluation, family, env, int(request["seed"]),
                    saved.descriptor or {}) if served is not None else None
    rows, trained = evaluation.settle(result, timings)
    result["libraries"].update(saved.libraries)
    for p in saved.problems:
        result["diagnostics"].append(_diag(p.code, p.message, module_path, None, p.hints))
    if saved.descriptor is None:
        result["ok"] = False
        return
    result["format"] = saved.descriptor["format"]
    if loading is not None:
        raise failed(loading) from None
    if rows is not None and trained is not None and judged is not None:
        judged.merge(result, timings)
    else:
        result["importance"] = importance_of.model_importance(family.model, family.inputs)
        if isinstance(serving, OnnxServing):
            result["diagnostics"].append(_diag(
                "BE410", "no evaluation rows: ONNX parity was not checked (the environment "
                "declares no label to evaluate)", severity="warning"))


def _import_evaluation() -> None:
    """Import what evaluation and parity use before they run in threads."""
    import buildenv.data.evaluation
    import buildenv.data.gate.gate
    import buildenv.training.importance
    import buildenv.training.parity
    import buildenv.training.scoring
    import buildenv.training.slice_run  # noqa: F401


class _Evaluation:
    """The trained model scored on the evaluation rows (`_evaluate`), in a thread from its
    creation; `settle` (idempotent) merges what it found into the result, in the place the
    serial order gives it, and raises its failure there."""

    def __init__(self, project: Any, env: Any, pins: dict, family: Any, ctx: Any,
                 manifests: dict, request: dict) -> None:
        self._part: dict = {"ok": True, "diagnostics": []}
        self._settled: tuple[Any, Any] | None = None
        self._rows: Any = None  # the evaluation rows, once read
        self._found: tuple[Any, Any] | None = None  # (rows, outputs), once it succeeded
        self._read, self._done = threading.Event(), threading.Event()
        if env.label is None:
            self._settled = (None, None)
            self._read.set()
            self._done.set()
            return
        preloaded()  # one thread imports at a time: MLflow's import first, then evaluation's
        _import_evaluation()

        def read(rows: Any) -> None:
            self._rows = rows
            self._read.set()

        def work() -> tuple[Any, Any, float]:
            mark = time.perf_counter()
            try:
                rows, trained = _evaluate(project, env, pins, family, ctx, manifests,
                                          self._part, request, read)
                self._found = (rows, trained)
            finally:
                self._read.set()
                self._done.set()
            return rows, trained, time.perf_counter() - mark

        self._beside = Beside(work, "evaluate")

    def rows_read(self) -> Any:
        """The evaluation rows once read (None when the evaluation ended without them); they
        are only read, never changed, by anyone."""
        self._read.wait()
        return self._rows

    def finished(self) -> tuple[Any, Any] | None:
        """Waits for the evaluation (on any thread): (rows, outputs), or None if it failed.
        Its findings and failure are still `settle`'s to merge and raise."""
        self._done.wait()
        return self._found

    def settle(self, result: dict, timings: dict) -> tuple[Any, Any]:
        if self._settled is not None:
            return self._settled
        try:
            rows, trained, seconds = self._beside.result()
        except _Failed as failed:
            self._settled = (None, None)
            if failed.result is not self._part:
                raise  # the gate refused the labels: that result replaces this one
            self._merge(result)
            raise _Failed(result) from None
        timings["evaluate"] = seconds
        self._merge(result)
        self._settled = (rows, trained)
        return self._settled

    def drop(self) -> None:
        """Wait for it and forget what it found (or how it failed)."""
        if self._settled is None:
            try:
                self._beside.result()
            except Exception:
                pass
            self._settled = (None, None)

    def _merge(self, result: dict) -> None:
        part = self._part
        result["diagnostics"].extend(part.pop("diagnostics", []))
        if not part.pop("ok", True):
            result["ok"] = False
        result.update(part)


def _converter_versions(family: Any) -> dict[str, str]:
    from buildenv.training.families.base import library_versions

    names = {"sklearn": ["skl2onnx", "onnx"], "torch": ["onnxscript", "onnx"],
             "onnx": ["onnx"]}[family.kind]
    if family.kind == "sklearn" and any(m in sys.modules for m in ("xgboost", "lightgbm")):
        names.append("onnxmltools")
    return library_versions(names)


def _evaluate(project: Any, env: Any, pins: dict, family: Any, ctx: Any, manifests: dict,
              result: dict, request: dict, read: Any = None) -> tuple[Any, Any]:
    """Score the trained model on the environment's evaluation rows, read through the gate:
    overall, and on every slice with bootstrap intervals (`training.slice_run`); (rows, the
    model's outputs on the labelled rows) for parity. `read(rows)` is told the rows as soon
    as they are read."""
    from buildenv.data.evaluation import evaluation_rows
    from buildenv.data.gate.errors import GateError
    from buildenv.data.gate.gate import Gate
    from buildenv.training.scoring import ScoringError, metrics, predict
    from buildenv.training.slice_run import evaluate_slices, slice_attributes

    labels = None
    if env.label_set() is not None:
        try:
            labels = ctx.label_table()
        except GateError as exc:
            raise _Failed(_refused([*ctx.gate_errors, exc])) from None
        result["labels"] = _label_summary(ctx)
    inputs = family.inputs
    gate = Gate(project, env, "evaluate", pins=pins, manifests=manifests or {})
    try:
        rows = evaluation_rows(gate, env, labels, attributes=slice_attributes(env))
    except GateError as exc:
        result["ok"] = False
        result["diagnostics"].append(exc.diagnostic.to_json())
        raise _Failed(result) from None
    if read is not None:
        read(rows)
    restricted = any(env.restricted(d) for d in rows.digests)
    summary = {**rows.method, "rows": rows.rows, "metrics": {}}
    result["evaluation"] = summary
    try:
        outputs = predict(family, rows.frame, rows.labels,
                          SimpleNamespace(classes=env.label_classes()), inputs, restricted)
        summary["metrics"] = {k: round(v, 6) for k, v in metrics(outputs).items()}
    except ScoringError as exc:
        result["ok"] = False
        result["diagnostics"].append(_diag(
            "BE411", f"the model cannot be scored on {rows.describe()}: {exc}", None, None,
            hints=["every model input must be a served column of the evaluation rows; "
                   "declare `evaluation.join` for columns of other datasets"]))
        raise _Failed(result) from None
    release = SimpleNamespace(project=project, pins=pins, key=request.get("release_key"))
    found, problems = evaluate_slices(env, rows, outputs, restricted, release)
    summary.update(found)
    result["diagnostics"].extend(problems)
    if any(d["severity"] == "error" for d in problems):
        result["ok"] = False
        raise _Failed(result)
    return rows, outputs


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


def _internal_failure(exc: BaseException) -> dict:
    """BE305 for a bug in buildenv or a crash in a library; frames only (messages and source
    lines may quote data, restricted or not)."""
    frames = [f"at {Path(f.filename).name}:{f.lineno} in {f.name}"
              for f in traceback.extract_tb(exc.__traceback__)[-5:]]
    return {"ok": False, "diagnostics": [_diag(
        "BE305", f"training process failed: {type(exc).__name__}", None, None, frames)]}


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(argv[0]).read_text())
    result_path = Path(request["result"])
    guard = None
    root = Path(request["root"]).resolve()
    recorder = CodeReads.installed(root, Path(__file__).resolve().parents[1])
    with recorder.recording() as read:  # the repository files user code opens: part of it
        try:
            guard = Guard.enter(request.get("sandbox"), root)
            result = run(request, guard)
        except ConfinementError as exc:
            result = {"ok": False, "diagnostics": [_diag(
                "BE326", f"the sandbox could not confine the training: {exc}", None, None,
                ["`buildenv doctor` checks this machine's sandbox"])]}
        except BaseException as exc:  # a bug in buildenv, or a crash in a library
            result = _internal_failure(exc)
    if read:  # on failure too: a failure remembered is replayed only while they are unchanged
        result["code_reads"] = read
    left = guard.reap() if guard is not None else None
    if left is not None:
        result.setdefault("diagnostics", []).append({**left, "path": request["module_path"]})
    uncached = uncached_sources()
    if uncached:  # the build fills the bytecode cache this sandboxed run could not write
        result["uncached_sources"] = uncached
    if skops_table.fresh() is not None:  # the build keeps it for the next run
        result["skops_types"] = skops_table.fresh()
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)
    return 0



if __name__ == "__main__":
    leave(main())
