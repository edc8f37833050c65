"""What a fitted model needs besides itself: the repository code it ships with, the libraries
it pins.

Runs inside the training process, on the live model. The model is pickled once into memory
and the stream's references by name (pickle's GLOBAL / STACK_GLOBAL: every class, function and
type it will import when loaded) are read with pickletools, whatever format the artifact is
later saved in. Each referenced module is one of:

- the standard library: nothing to do;
- a distribution installed in the training's environment: a library, recorded with its
  version (the lineage's `libraries`, checked against `serving.requirements`);
- a module of the repository: shipped with the model under its import path (MLflow's
  `code_paths`), with the repository modules it imports, so the artifact loads outside the
  repository;
- anything else cannot be shipped, and the build refuses (BE356): the training's entry module
  (loading the model would run the training module), buildenv's own code (serving does not
  install buildenv), a module from neither the repository nor the environment.
"""

from __future__ import annotations

import importlib.util
import io
import pickletools
import shutil
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildenv.core.code import module_closure
from buildenv.training.families.base import library_versions
from buildenv.training.installed import distributions_by_package

__all__ = ["ModelNeeds", "model_needs", "referenced_globals", "stage_code"]

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}
_GET_OPS = {"BINGET", "LONG_BINGET", "GET"}
_PUT_OPS = {"BINPUT", "LONG_BINPUT", "PUT"}


@dataclass
class ModelNeeds:
    libraries: dict[str, str] = field(default_factory=dict)  # distribution -> version
    code_modules: list[str] = field(default_factory=list)  # repository modules, import names
    problems: list[dict] = field(default_factory=list)  # BE356 diagnostics, as JSON


def referenced_globals(data: bytes) -> set[tuple[str, str]]:
    """(module, qualified name) of every object a pickle stream imports by name."""
    found: set[tuple[str, str]] = set()
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # what the recent ops pushed; None for anything not a string
    last_pushed = False
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            last_pushed = True
            continue
        if name in _GET_OPS:
            pushed.append(memo.get(int(arg or 0)))
            last_pushed = True
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if last_pushed and pushed else None
            continue
        if name in _PUT_OPS:
            memo[int(arg or 0)] = pushed[-1] if last_pushed and pushed else None
            continue
        if name in ("FRAME", "PROTO"):
            continue
        if name == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
            found.add((module, qualname))
        elif name == "STACK_GLOBAL" and len(pushed) >= 2:
            module, qualname = pushed[-2], pushed[-1]
            if isinstance(module, str) and isinstance(qualname, str):
                found.add((module, qualname))
        pushed.append(None)
        last_pushed = False
        del pushed[:-4]
    return found


def _site_dirs() -> list[Path]:
    """The interpreter's site-packages, as named and as resolved (a PEX venv links them)."""
    dirs = [Path(d) for d in (*site.getsitepackages(), site.getusersitepackages()) if d]
    return sorted({*(d.absolute() for d in dirs), *(d.resolve() for d in dirs)})


def _module_file(module: str) -> Path | None:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        path = spec.origin if spec is not None and spec.has_location else None
    return Path(path).absolute() if path else None


def _diag(message: str, path: str | None, hints: list[str]) -> dict:
    return {"code": "BE356", "message": message, "path": path, "line": None, "col": None,
            "severity": "error", "hints": hints}


def model_needs(model: Any, root: Path, entry_path: str) -> ModelNeeds:
    """What loading `model` imports, sorted into libraries and repository code."""
    # deferred: the training process's start-up; cloudpickle comes with MLflow's client
    import cloudpickle  # type: ignore[import-untyped]  # pants: no-infer-dep (untyped)

    needs = ModelNeeds()
    root = root.resolve()
    entry_file = (root / entry_path).resolve()
    own = Path(__file__).resolve().parents[1]  # the buildenv package
    sites = _site_dirs()
    distributions = distributions_by_package()
    try:
        data = cloudpickle.dumps(model, protocol=5)
    except Exception:  # not picklable (a generator, a lock): saving it says why (BE417)
        return needs
    used = sorted(referenced_globals(data))
    modules: dict[str, list[str]] = {}
    for module, qualname in used:
        modules.setdefault(module, []).append(qualname)
    shipped: list[str] = []
    for module, names in sorted(modules.items()):
        top = module.split(".", 1)[0]
        if top in sys.stdlib_module_names or top == "__builtin__":
            continue
        named = _module_file(module)  # as imported (in a PEX venv, a link into its chroot)
        where = named.resolve() if named is not None else None
        what = ", ".join(f"{module}.{n}" for n in names[:3]) + (" ..." if len(names) > 3 else "")
        installed = named is not None and where is not None and any(
            named.is_relative_to(s) or where.is_relative_to(s) for s in sites)
        if where is not None and where.is_relative_to(own):
            needs.problems.append(_diag(
                f"the model refers to {what}, buildenv's own code: serving does not install "
                "buildenv, so the artifact could not be loaded there", entry_path,
                ["use classes of your libraries or of your repository in the model"]))
        elif installed or (top in distributions and where is not None
                           and not where.is_relative_to(root)):
            # A PEX venv lists no files in its RECORDs: the distribution is then found by the
            # names the package is published under (`sklearn` -> scikit-learn), as for the
            # model's library versions, so both say the same wherever a training runs.
            needs.libraries.update(library_versions([top]))
        elif where is not None and where == entry_file:
            needs.problems.append(_diag(
                f"the model refers to {what}, defined in the training's entry module "
                f"{entry_path}: loading the model would import, and so run, the training "
                "module", entry_path,
                [f"move {names[0]} into a module of its own (next to {entry_path}) and import "
                 "it from there: that module is shipped with the model"]))
        elif where is not None and where.is_relative_to(root):
            shipped.append(module)
        else:
            needs.problems.append(_diag(
                f"the model refers to {what}, from "
                f"{where if where is not None else 'a module that cannot be found'}: neither "
                "the repository nor the training's environment has it, so it cannot be "
                "shipped with the model", entry_path,
                ["define it in the repository, or add the library that has it to the "
                 "training's requirements"]))
    needs.libraries = dict(sorted(needs.libraries.items()))
    needs.code_modules = sorted(shipped)
    return needs


def stage_code(root: Path, modules: list[str], stage: Path, entry_path: str) -> list[str]:
    """Copy `modules` and the repository modules they import (never the training's entry
    module) under `stage`, at their import paths with their packages' `__init__.py`; the
    top-level entries, for `code_paths`."""
    root = root.resolve()
    files = module_closure(root, [p.resolve() for m in modules
                                  if (p := _module_file(m)) is not None])
    tops: set[str] = set()
    for path in files:
        if path == (root / entry_path).resolve():
            continue
        rel = path.relative_to(root)
        for parent in list(rel.parents)[:-1]:  # the packages on the way
            init = root / parent / "__init__.py"
            if init.is_file():
                dest = stage / parent / "__init__.py"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(init, dest)
        dest = stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        tops.add(rel.parts[0])
    return [str(stage / top) for top in sorted(tops)]
