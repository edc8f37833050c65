"""Verify a fitted model against the environment it was compiled for (and tell about the others).

Inputs must all be served columns, the label must not be one, every class in
the fitted graph must match `serving.ops`, and the libraries it was trained
with must satisfy `serving.requirements`. Each refusal names the column or
class, points at the YAML line that forbids it, and lists the environments of
the multiverse where it would be accepted.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.env.resolve import Resolved
from buildenv.env.spec import op_allowed

__all__ = ["located", "verify_model"]


def _serving_envs(all_resolved: dict[str, Resolved], column: str) -> list[str]:
    return sorted(name for name, other in all_resolved.items()
                  if column in other.env.served_columns())


def _op_envs(all_resolved: dict[str, Resolved], cls: str) -> list[str]:
    return sorted(name for name, other in all_resolved.items()
                  if other.env.serving is not None and op_allowed(cls, other.env.serving.ops))


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
    served = env.served_columns()
    for column in inputs:
        if column in served:
            continue
        declared = [(ds_name, ds.columns[column]) for ds_name, ds in env.datasets.items()
                    if column in ds.columns]
        elsewhere = _serving_envs(all_resolved, column)
        if declared:
            ds_name = declared[0][0]
            problems.append(res.diag(
                "BE401", f"model input '{column}' is training-only in environment {env.name} "
                f"(dataset '{ds_name}' declares it serving: false): production cannot provide "
                "it", "datasets", ds_name, "columns", column, "serving",
                hints=(_envs_hint("it is served", elsewhere),
                       "drop it from the model's inputs, or build for an environment that "
                       "serves it")))
        else:
            problems.append(Diagnostic(
                "BE402", f"model input '{column}' is not declared by any dataset of environment "
                f"{env.name}", training_file,
                hints=(_envs_hint("it is served", elsewhere),)))
    if env.label is not None and env.label.column is not None and env.label.column in inputs:
        problems.append(res.diag("BE403", f"the label column '{env.label.column}' is a model "
                                 "input", "label", "column",
                                 hints=("exclude the label from the features",)))
    serving = env.serving
    if serving is not None:
        reported: set[str] = set()
        for op in result.get("ops", []):
            cls = op["class"]
            if op_allowed(cls, serving.ops) or cls in reported:
                continue
            reported.add(cls)
            problems.append(res.diag(
                "BE404", f"{cls} (at {op['where']}) is not supported by serving stack "
                f"'{serving.stack}' of environment {env.name}", "serving", "ops",
                hints=(_envs_hint("it is supported", _op_envs(all_resolved, cls)),
                       "use an allowed class, or add it to serving.ops if production runs it")))
        problems.extend(_requirements(res, result.get("libraries", {})))
    for item in result.get("diagnostics", []):
        d = located(res, item)
        if d.path is None:
            pos = res.where("serving")
            d = Diagnostic(d.code, d.message, pos.path if pos else None,
                           pos.line if pos else None, pos.col if pos else None, d.severity,
                           d.hints)
        problems.append(d)
    return problems


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
