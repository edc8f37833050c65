"""`buildenv ops DIR_OR_ENV`: the operators an artifact runs, or the operators an environment's
serving runtime must have.

For an artifact directory, its files are checked against the lineage's digest first (nothing
is parsed that was not verified), then the ONNX graph's inventory is read
(`training.onnx_inventory`; an artifact of the `sklearn` stack lists the classes it is made
of). For an environment of the `onnx` stack, its `serving.ops` globs are expanded against
onnx's operator schemas at `serving.opset` (and the `ai.onnx.ml` opset released with it), in
onnxruntime's reduced-build configuration format (`ai.onnx;17;Add,Gemm,...`): the input of
`build.py --include_ops_by_config` for a runtime that runs exactly what the environment allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from buildenv.compile.artifact import read_lineage
from buildenv.compile.integrity import model_descriptor, verify_artifact
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.extras import require
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.env.spec import OnnxServing
from buildenv.training.onnx_inventory import (
    InventoryError,
    ml_opset,
    read_inventory,
    reduced_build_config,
)

__all__ = ["OpsReport", "ops_report"]


@dataclass
class OpsReport:
    subject: str  # "artifact" | "environment"
    name: str
    inventory: dict | None = None  # Inventory.to_json() (ONNX graphs)
    classes: list[str] = field(default_factory=list)  # sklearn stack
    config: list[str] = field(default_factory=list)  # reduced-build configuration lines
    header: list[str] = field(default_factory=list)  # comment lines for the configuration

    def to_json(self) -> dict:
        return {"subject": self.subject, "name": self.name, "inventory": self.inventory,
                "classes": self.classes, "config": self.config}

    def text(self, config: bool) -> str:
        if config or self.subject == "environment":
            if not self.config and self.classes:
                return "\n".join(self.classes)
            return "\n".join([f"# {line}" for line in self.header] + self.config)
        if self.inventory is None:
            return "\n".join(self.classes)
        inv = self.inventory
        imports = ", ".join(f"{d} {v}" for d, v in inv["opset_import"].items())
        lines = [f"{self.name}: ONNX IR version {inv['ir_version']}, opsets {imports}"]
        width = max((len(op["operator"]) for op in inv["operators"]), default=0)
        for op in inv["operators"]:
            lines.append(f"  {op['operator']:<{width}}  opset {op['opset']}  "
                         f"{op['nodes']} node(s)  first: {op['first_node']}")
        return "\n".join(lines)


def ops_report(project: Project, target: str) -> OpsReport:
    path = Path(target)
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        return _artifact(project, path, target)
    multiverse = Multiverse(project)
    if target not in multiverse.names():
        raise DiagnosticError([Diagnostic(
            "BE014", f"'{target}' is neither an artifact directory nor an environment",
            hints=("pass dist/<training>/<env> or an environment name (`buildenv envs`)",))],
            2)
    return _environment(multiverse, target)


def _artifact(project: Project, path: Path, target: str) -> OpsReport:
    lineage = read_lineage(path)
    if lineage is None:
        raise DiagnosticError([Diagnostic(
            "BE750", f"{target} holds no artifact (no buildenv.json lineage)",
            hints=("`buildenv build TRAINING --env ENV` writes dist/<training>/<env>/",))], 2)
    verify_artifact(project, path, lineage.get("model_digest"), f"the artifact at {target}")
    descriptor, _ = model_descriptor(path)
    report = OpsReport("artifact", target)
    if descriptor.get("format") != "onnx":
        report.classes = sorted({op["class"] for op in lineage.get("ops") or []})
        return report
    require("models", f"reading the ONNX graph of {target}", "onnx")
    try:
        inventory = read_inventory(path / descriptor["file"])
    except InventoryError as exc:
        raise DiagnosticError([Diagnostic("BE773", f"the artifact at {target}: {exc}")]) \
            from None
    report.inventory = inventory.to_json()
    report.config = inventory.config_lines()
    report.header = [f"operators of {target} (`buildenv ops`)"]
    return report


def _environment(multiverse: Multiverse, name: str) -> OpsReport:
    res = multiverse.resolve(name)
    serving = res.env.serving
    report = OpsReport("environment", name)
    if not isinstance(serving, OnnxServing):
        report.classes = list(serving.ops) if serving is not None else []
        return report
    require("models", f"expanding {name}'s serving.ops against onnx's operator schemas", "onnx")
    opsets = {"ai.onnx": serving.opset, "ai.onnx.ml": ml_opset(serving.opset)}
    report.config = reduced_build_config(list(serving.ops), opsets)
    report.header = [f"environment {name}: serving.ops expanded at opset {serving.opset} "
                     f"(ai.onnx.ml {opsets['ai.onnx.ml']}) (`buildenv ops {name}`)",
                     "onnxruntime reduced build: build.py --include_ops_by_config FILE"]
    return report
