"""Verify a fitted model against the environment it was compiled for (and tell about the others).

Inputs must all be served columns (BE401/BE402), the label must not be one (BE403). The
`sklearn` stack serves scikit-learn-API models only (BE413 for a PyTorch module or an ONNX
graph) and every class in the fitted model must match `serving.ops` (BE404). The `onnx` stack
checks operators, not classes: every operator of the graph's inventory must match a
`domain:op_type` glob of `serving.ops` and its default-domain opset must not exceed
`serving.opset` (BE406), its IR version `serving.max_ir_version` (BE412). The libraries the model was trained
with must satisfy `serving.requirements` (BE408), and the artifact must fit `serving.limits`
(BE414). Each refusal names the column, class or operator (and its node), points at the YAML
line that forbids it, and lists the environments of the multiverse where it would be accepted;
a refused input also names the training line that read it. The rules themselves are
`env.serving_rules`, which the pre-check applies too.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.env.resolve import Resolved
from buildenv.env.serving_rules import (
    family_refused,
    forbidden_classes,
    forbidden_operators,
    label_as_input,
    unserved_inputs,
    version_excess,
)
from buildenv.env.spec import OnnxServing, SklearnServing, op_allowed

__all__ = ["artifact_mib", "located", "verify_limits", "verify_model"]


def _serving_envs(all_resolved: dict[str, Resolved], column: str) -> list[str]:
    return sorted(name for name, other in all_resolved.items()
                  if column in other.env.served_columns())


def _op_envs(all_resolved: dict[str, Resolved], cls: str) -> list[str]:
    return sorted(name for name, other in all_resolved.items()
                  if isinstance(other.env.serving, SklearnServing)
                  and op_allowed(cls, other.env.serving.ops))


def _operator_envs(all_resolved: dict[str, Resolved], inventory: dict, operator: str
                   ) -> list[str]:
    """onnx environments whose allow-list has the operator and whose versions fit the graph."""
    out = []
    for name, other in all_resolved.items():
        serving = other.env.serving
        if isinstance(serving, OnnxServing) and op_allowed(operator, serving.ops) \
                and not version_excess(other.env, inventory):
            out.append(name)
    return sorted(out)


def _onnx_envs(all_resolved: dict[str, Resolved]) -> list[str]:
    return sorted(n for n, r in all_resolved.items() if isinstance(r.env.serving, OnnxServing))


def _envs_hint(kind: str, names: list[str]) -> str:
    if not names:
        return f"no environment of the multiverse {kind}"
    return f"{kind} in: {', '.join(names)}"


def verify_model(res: Resolved, result: dict, all_resolved: dict[str, Resolved],
                 training_file: str | None = None) -> list[Diagnostic]:
    env = res.env
    problems: list[Diagnostic] = []
    inputs = result.get("inputs")
    if inputs is None:
        problems.append(Diagnostic("BE409", "cannot tell which columns the model reads (it has "
                                   "no feature_names_in_)", training_file,
                                   hints=("fit the model on a pandas DataFrame with named "
                                          "columns",)))
        inputs = []
    sites = result.get("read_sites") or {}
    for column in unserved_inputs(env, inputs):
        declared = [ds_name for ds_name, ds in env.datasets.items() if column in ds.columns]
        elsewhere = _serving_envs(all_resolved, column)
        read_at = (f"the training reads it at {sites[column]}, and the model takes it as an "
                   "input",) if column in sites else ()
        if declared:
            problems.append(res.diag(
                "BE401", f"model input '{column}' is training-only in environment {env.name} "
                f"(dataset '{declared[0]}' declares it serving: false): production cannot "
                "provide it", "datasets", declared[0], "columns", column, "serving",
                hints=(*read_at, _envs_hint("it is served", elsewhere),
                       "drop it from the model's inputs, or build for an environment that "
                       "serves it")))
        else:
            named = ("the ONNX graph's inputs are the model's input columns: name each like "
                     "the column it takes",) if result.get("family") == "onnx" else ()
            problems.append(Diagnostic(
                "BE402", f"model input '{column}' is not declared by any dataset of environment "
                f"{env.name}", training_file,
                hints=(*read_at, *named, _envs_hint("it is served", elsewhere))))
    if label_as_input(env, inputs) and env.label is not None:
        problems.append(res.diag("BE403", f"the label column '{env.label.column}' is a model "
                                 "input", "label", "column",
                                 hints=("exclude the label from the features",)))
    serving = env.serving
    if serving is not None:
        problems.extend(_stack(res, result, all_resolved, training_file))
        problems.extend(_requirements(res, result.get("libraries", {})))
    for item in result.get("diagnostics", []):
        d = located(res, item)
        if d.path is None:
            pos = res.where("serving", "parity") if d.code == "BE407" else res.where("serving")
            d = Diagnostic(d.code, d.message, pos.path if pos else None,
                           pos.line if pos else None, pos.col if pos else None, d.severity,
                           d.hints)
        problems.append(d)
    problems.extend(_latency(res, result))
    return problems


def _stack(res: Resolved, result: dict, all_resolved: dict[str, Resolved],
           training_file: str | None) -> list[Diagnostic]:
    env = res.env
    family = result.get("family") or "sklearn"
    if family_refused(env, family):
        what = "a PyTorch module" if family == "torch" else "an ONNX graph"
        return [res.diag(
            "BE413", f"the model is {what}, which serving stack 'sklearn' of environment "
            f"{env.name} cannot run (it loads scikit-learn-API models)", "serving", "stack",
            hints=(_envs_hint("an onnx stack serves it", _onnx_envs(all_resolved)),))]
    problems = []
    for op in forbidden_classes(env, result.get("ops", [])):
        cls = op["class"]
        problems.append(res.diag(
            "BE404", f"{cls} (at {op['where']}) is not supported by serving stack "
            f"'sklearn' of environment {env.name}", "serving", "ops",
            hints=(_envs_hint("it is supported", _op_envs(all_resolved, cls)),
                   "use an allowed class, or add it to serving.ops if production runs it")))
    inventory = (result.get("onnx") or {}).get("inventory")
    for excess in version_excess(env, inventory):
        opset = excess.startswith("opset")
        problems.append(res.diag(
            "BE406" if opset else "BE412", f"the ONNX graph needs {excess} of environment "
            f"{env.name}", "serving", "opset" if opset else "max_ir_version",
            hints=("convert at the runtime's opset, or serve it where the runtime is newer",)))
    for op in forbidden_operators(env, inventory):
        problems.append(res.diag(
            "BE406", f"ONNX operator {op['operator']} (opset {op['opset']}, {op['nodes']} "
            f"node(s), first: {op['first_node']}) is not in serving.ops of environment "
            f"{env.name}", "serving", "ops",
            hints=(_envs_hint("it is allowed", _operator_envs(all_resolved, inventory or {},
                                                              op["operator"])),
                   "use steps that convert to allowed operators, or add it to serving.ops "
                   "if the serving runtime runs it")))
    return problems


def _latency(res: Resolved, result: dict) -> list[Diagnostic]:
    serving = res.env.serving
    latency = result.get("latency") or {}
    limit = serving.limits.max_latency_ms if serving is not None else None
    if limit is None or latency.get("p99_ms") is None or latency["p99_ms"] <= limit:
        return []
    return [res.diag(
        "BE414", f"single-row predictions take {latency['p99_ms']:g} ms at p99 (over "
        f"{latency['rows']} evaluation rows, median {latency['median_ms']:g} ms), above "
        f"serving.limits.max_latency_ms = {limit:g}", "serving", "limits", "max_latency_ms",
        hints=("a smaller model (fewer trees, narrower layers), or fewer steps",))]


def artifact_mib(directory: Path, exclude: tuple[str, ...]) -> float:
    """The artifact's size as `serving.limits.max_model_mb` counts it."""
    total = sum(p.stat().st_size for p in directory.rglob("*")
                if p.is_file() and p.relative_to(directory).as_posix() not in exclude)
    return total / (1 << 20)


def verify_limits(res: Resolved, directory: Path, exclude: tuple[str, ...]) -> list[Diagnostic]:
    serving = res.env.serving
    limit = serving.limits.max_model_mb if serving is not None else None
    if limit is None:
        return []
    size = artifact_mib(directory, exclude)
    if size <= limit:
        return []
    return [res.diag(
        "BE414", f"the artifact is {size:.2f} MiB, above serving.limits.max_model_mb = "
        f"{limit:g}", "serving", "limits", "max_model_mb",
        hints=("a smaller model (fewer trees, narrower layers)",))]


def located(res: Resolved, found: dict) -> Diagnostic:
    """A diagnostic of the training process; one about a key of the environment (it names
    the key's path, `yaml_path`) is placed at that key's line."""
    plain = Diagnostic.from_json(found)
    path = found.get("yaml_path")
    if not path or plain.path:
        return plain
    return res.diag(plain.code, plain.message, *path, hints=plain.hints,
                    severity=plain.severity)


def _requirements(res: Resolved, libraries: dict[str, str]) -> list[Diagnostic]:
    out = []
    serving = res.env.serving
    assert serving is not None
    used = {canonicalize_name(k): v for k, v in libraries.items()}
    for i, text in enumerate(serving.requirements):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            out.append(res.diag("BE004", f"serving.requirements: {exc}", "serving",
                                "requirements", i))
            continue
        name = canonicalize_name(req.name)
        version = used.get(name)
        if version is None:
            try:
                version = metadata.version(req.name) if name in ("numpy", "pandas") else None
            except metadata.PackageNotFoundError:
                version = None
        if version is not None and req.specifier and not req.specifier.contains(
                version, prereleases=True):
            out.append(res.diag(
                "BE408", f"the model was trained with {req.name} {version}, but serving pins "
                f"'{text}'", "serving", "requirements", i,
                severity=Severity.ERROR,
                hints=(f"train with {req.name}{req.specifier}, or move the serving pin",)))
    return out
