"""The pre-check: the training run once on a sample of its rows, to refuse in seconds what the
full fit would be refused for.

`ctx` serves `SAMPLE_ROWS` evenly spaced training rows of the label dataset (every dataset when
the environment has no label); the model this dry run returns is adopted, described and, for
the `onnx` stack, converted, and judged by the same rules verification applies
(`env.serving_rules`): inputs served, label not an input, family and classes (sklearn stack)
or operators, opset and IR version (onnx stack). When they refuse it, the training process
stops and verification reports why (with the training line that read each refused column). A
dry run that fails in any other way (a fit that needs more rows than the sample) proves
nothing: it is recorded as skipped, and the full run decides. Skipped too when the label
dataset is small enough that the sample would be most of it. For scikit-learn-API models the
conversion may be deferred (`run(..., defer=True)`): the runner then converts a copy of the
sample model in a thread while the full fit runs (`beside.Judge`). Where forking is safe, the
runner runs all of it in a forked process beside the full fit instead (`precheck_fork`). A
PyTorch sample model is deferred when the export worker takes it (`torch_export_worker`): it is
exported in that process while the full fit runs, and the thread only waits for its graph.

Side effects: `train(ctx)` runs twice. Metrics and params the dry run logs are discarded;
Python's, NumPy's and torch's seeds are reset before the full run, which therefore trains
exactly as without the pre-check, and reads the tables the dry run read (verified once) without
reading them again (a forked dry run's tables stay in its process: the full run reads its own). Anything else the training does (files it writes, what it prints, calls
to services) happens twice: `precheck = false` in its `[tool.buildenv.trainings.<name>]` table
turns the pre-check off.
"""

from __future__ import annotations

import copy
from typing import Any

from buildenv.env.serving_rules import refused
from buildenv.env.spec import OnnxServing
from buildenv.training.context import ForbiddenRead
from buildenv.training.families import FamilyError, adopt, torch_export_worker
from buildenv.training.families.torch_contract import ModelContractError
from buildenv.training.onnx_inventory import inventory as inventory_of
from buildenv.training.served_artifact import convert

__all__ = ["SAMPLE_ROWS", "deferrable", "run", "wanted"]

SAMPLE_ROWS = 2000


def wanted(request: dict, env: Any) -> bool:
    """On unless the training opts out, the environment has no serving stack to check, or the
    label dataset is small (at most twice the sample: the full run is about as fast)."""
    if not request.get("precheck", True) or env.serving is None:
        return False
    label = env.label_dataset()
    rows = (request.get("rows") or {})
    sizes = [rows[label]] if label in rows else list(rows.values())
    return not sizes or max(sizes) > 2 * SAMPLE_ROWS


def run(ctx: Any, env: Any, train: Any, request: dict, defer: bool = False) -> dict:
    """`{"refused": True, "result": ...}` to stop, else `{"summary": ...}` for the lineage.
    With `defer`, a conversion the verdict still needs may come back undone instead:
    `{"deferred": callable}`, whose call gives one of the two (see `deferrable`)."""
    ctx.sample_rows = SAMPLE_ROWS
    try:
        model = train(ctx)
    except ForbiddenRead:
        raise  # the full run would read the same: the runner reports it (BE303)
    except ModelContractError:
        raise
    except Exception as exc:
        if ctx.gate_errors:
            raise
        return {"summary": {"status": "skipped", "rows": SAMPLE_ROWS,
                            "reason": f"the training raised {type(exc).__name__} on the sample"}}
    finally:
        ctx.finish()
    try:
        family = adopt(model, env)
    except FamilyError as exc:
        return _skipped(exc)
    facts = {"read_sites": dict(ctx.read_sites), "reads": dict(ctx.reads)}
    if not isinstance(env.serving, OnnxServing) or refused(
            env, family.inputs, family.kind, family.ops(), None):
        return _verdict(family, env, request, facts, None)
    if defer and deferrable(family):
        try:  # the full run may refit this very object: convert a copy of it
            family = adopt(copy.deepcopy(model), env)
        except Exception:
            pass
        else:
            return {"deferred": lambda: _converted(family, env, request, facts)}
    if defer and family.kind == "torch":
        torch_family: Any = family
        pending = torch_export_worker.submit(*torch_family.export_args(env.serving.opset))
        if pending is not None:  # the module is pickled now: the full run cannot change it
            return {"deferred": lambda: _exported(pending, family, env, request, facts)}
    return _converted(family, env, request, facts)


def deferrable(family: Any) -> bool:
    """Whether the sample model's conversion may run in a thread during the full fit: the
    scikit-learn-API families (skl2onnx and onnxmltools are plain Python over a copy of the
    model). A PyTorch export traces with process-wide state: it runs first, unless the export
    worker (another process) takes it."""
    return bool(family.kind == "sklearn")


def _converted(family: Any, env: Any, request: dict, facts: dict) -> dict:
    try:
        inventory = inventory_of(convert(family, env)).to_json()
    except FamilyError as exc:
        return _skipped(exc)
    return _verdict(family, env, request, facts, inventory)


def _exported(pending: Any, family: Any, env: Any, request: dict, facts: dict) -> dict:
    """The verdict on the sample's graph exported by the worker. When the worker could not
    answer, the pre-check proves nothing (the full model's graph is still checked)."""
    try:
        inventory = inventory_of(pending.result()).to_json()
    except FamilyError as exc:
        return _skipped(exc)
    except torch_export_worker.Unavailable:
        return {"summary": {"status": "skipped", "rows": SAMPLE_ROWS,
                            "reason": "the export worker stopped before exporting the sample"}}
    return _verdict(family, env, request, facts, inventory)


def _skipped(exc: FamilyError) -> dict:
    return {"summary": {"status": "skipped", "rows": SAMPLE_ROWS,
                        "reason": f"{exc.problem.code} on the sample model"}}


def _verdict(family: Any, env: Any, request: dict, facts: dict, inventory: dict | None) -> dict:
    ops = family.ops()
    if not refused(env, family.inputs, family.kind, ops, inventory):
        return {"summary": {"status": "passed", "rows": SAMPLE_ROWS}}
    problems = [{"code": p.code, "message": p.message, "path": request["module_path"],
                 "line": None, "col": None, "severity": p.severity, "hints": list(p.hints)}
                for p in family.problems]
    result = {"ok": True, "diagnostics": problems, "precheck": {"status": "refused",
                                                          "rows": SAMPLE_ROWS},
              "inputs": family.inputs, "ops": ops, "family": family.kind,
              "model_class": family.model_class, "read_sites": facts["read_sites"],
              "libraries": {}, "metrics": {}, "params": {}, "reads": facts["reads"]}
    if inventory is not None:
        result["onnx"] = {"file": None, "opset": env.serving.opset, "inventory": inventory}
    return {"refused": True, "result": result}
