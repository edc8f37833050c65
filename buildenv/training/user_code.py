"""Loading user code and reporting on it: what every process that runs user code shares.

The training's runner (`training.runner`) and the transforms' (`training.sources_runner`,
`derive_run`, `label_run`) both import a user's module from its file and report problems as
the same diagnostic dicts. These live here, not in the training's runner, so that the
transforms' process -- whose start-up is a small rebuild's critical path -- does not import
the training's modules (its model families' tables, installed packages' metadata).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["diag", "load_entry", "load_module", "manifests", "type_name"]


def diag(code: str, message: str, path: str | None = None, line: int | None = None,
         hints: list[str] | tuple[str, ...] | None = None, severity: str = "error") -> dict:
    """A diagnostic as the build reads it from a result (`Diagnostic.to_json`'s shape)."""
    return {"code": code, "message": message, "path": path, "line": line, "col": None,
            "severity": severity, "hints": list(hints or [])}


def load_entry(root: Path, module_path: str, function: str) -> Any:
    """`function` of the user's module at `module_path` (relative to `root`)."""
    return getattr(load_module(root, module_path), function)


def load_module(root: Path, module_path: str) -> Any:
    """The user's module at `module_path` (relative to `root`), imported from its file under
    its dotted name (`labeling/rules.py` is `labeling.rules`), so that it imports its package's
    modules as Python would: `from .helpers import X` as well as `from labeling.helpers ...`."""
    path = root / module_path
    name = module_path.removesuffix(".py").replace("/", ".")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def manifests(request: dict) -> dict:
    """The request's manifests of partitioned datasets, by dataset."""
    from buildenv.data.lock.manifest import Manifest  # deferred: a request without any

    return {name: Manifest.from_json(data)
            for name, data in (request.get("manifests") or {}).items()}


def type_name(value: Any, restricted: bool) -> str:
    """The name of `value`'s class (of an exception, a returned value) for a diagnostic. When
    restricted data was read, only a class defined in code is named: one made at run time
    (`type(row_value, (KeyError,), {})`) could carry a row's value in its name, so its nearest
    built-in base is named instead."""
    cls = value if isinstance(value, type) else type(value)
    if not restricted:
        return cls.__name__
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is cls:
        return cls.__name__
    base = next((b for b in cls.__mro__ if b.__module__ == "builtins"), object)
    return f"a {base.__name__} of a class made at run time (its name withheld)"
