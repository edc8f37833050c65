"""What an environment's serving contract refuses in a model, as pure predicates.

Shared by the pre-check in the training process (which only needs to know whether to stop
before the full fit) and by verification after it (which turns each finding into a diagnostic
with the YAML line and the environments that would accept it), so the two never disagree.
A model is described by the plain data the training process reports: its input columns,
family, classes (`ops`) and, for the onnx stack, its operator inventory (as JSON).
"""

from __future__ import annotations

from typing import Any

from buildenv.env.spec import Environment, OnnxServing, SklearnServing, op_allowed

__all__ = ["ONNX_FAMILIES", "family_refused", "forbidden_classes", "forbidden_operators",
           "label_as_input", "refused", "unserved_inputs", "version_excess"]

ONNX_FAMILIES = ("torch", "onnx")  # families only the onnx stack can serve


def unserved_inputs(env: Environment, inputs: list[str]) -> list[str]:
    served = env.served_columns()
    return [c for c in inputs if c not in served]


def label_as_input(env: Environment, inputs: list[str]) -> bool:
    return env.label is not None and env.label.column is not None and \
        env.label.column in inputs


def family_refused(env: Environment, family: str | None) -> bool:
    """A PyTorch module or a ready ONNX graph cannot be served by the sklearn stack."""
    return isinstance(env.serving, SklearnServing) and family in ONNX_FAMILIES


def forbidden_classes(env: Environment, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sklearn stack: the classes of the fitted model that `serving.ops` does not allow (each
    class once, first occurrence)."""
    if not isinstance(env.serving, SklearnServing):
        return []
    seen: set[str] = set()
    out = []
    for op in ops:
        cls = op["class"]
        if cls not in seen and not op_allowed(cls, env.serving.ops):
            seen.add(cls)
            out.append(op)
    return out


def forbidden_operators(env: Environment, inventory: dict[str, Any] | None
                        ) -> list[dict[str, Any]]:
    """onnx stack: the inventory's operators that `serving.ops` does not allow."""
    if not isinstance(env.serving, OnnxServing) or not inventory:
        return []
    return [op for op in inventory.get("operators", [])
            if not op_allowed(op["operator"], env.serving.ops)]


def version_excess(env: Environment, inventory: dict[str, Any] | None) -> list[str]:
    """onnx stack: what of the graph's versions exceeds the runtime's: the default-domain opset
    (`serving.opset`) and the IR version (`serving.max_ir_version`)."""
    serving = env.serving
    if not isinstance(serving, OnnxServing) or not inventory:
        return []
    out = []
    opset = (inventory.get("opset_import") or {}).get("ai.onnx")
    if opset is not None and opset > serving.opset:
        out.append(f"opset {opset} (serving.opset is {serving.opset})")
    ir = inventory.get("ir_version")
    if serving.max_ir_version is not None and ir is not None and ir > serving.max_ir_version:
        out.append(f"IR version {ir} (serving.max_ir_version is {serving.max_ir_version})")
    return out


def refused(env: Environment, inputs: list[str] | None, family: str | None,
            ops: list[dict[str, Any]], inventory: dict[str, Any] | None) -> bool:
    """Whether verification will refuse a model so described."""
    inputs = inputs or []
    return bool(unserved_inputs(env, inputs) or label_as_input(env, inputs)
                or family_refused(env, family) or forbidden_classes(env, ops)
                or forbidden_operators(env, inventory) or version_excess(env, inventory))
