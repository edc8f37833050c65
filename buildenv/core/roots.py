"""Where the project is: its root directory, found without reading its configuration.

Split from `core.project` so that what must start fast (`buildenv lock`'s relock of unchanged
environments, `buildenv.cli.quick_lock`) finds the root without importing pydantic, which
`Project`'s configuration models need.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["find_root", "is_project", "require_project"]


#: What makes a directory a buildenv project (the first line of a `[tool.buildenv]` table).
_TOOL_TABLE = re.compile(r'^[ \t]*\[[ \t]*tool[ \t]*\.[ \t]*"?buildenv"?[ \t]*[\].]', re.M)


def is_project(path: Path) -> bool:
    """A buildenv project: a `pyproject.toml` with a `[tool.buildenv]` table, or an
    `environments/` directory."""
    if (path / "environments").is_dir():
        return True
    pyproject = path / "pyproject.toml"
    try:
        return pyproject.is_file() and bool(_TOOL_TABLE.search(
            pyproject.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def find_root(start: Path | None = None, *, required: bool = True) -> Path:
    """`BUILDENV_ROOT`, else the nearest directory from `start` (the working directory) up that
    `is_project`. Nothing found: BE040 (exit 2), or `start` itself when not `required`."""
    env = os.environ.get("BUILDENV_ROOT")
    if env:
        root = Path(env).resolve()
        if required:
            require_project(root, "BUILDENV_ROOT")
        return root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if is_project(candidate):
            return candidate
    if required:
        raise DiagnosticError([Diagnostic(
            "BE040", f"not in a buildenv project: neither {here} nor a parent directory holds "
            "a pyproject.toml with a [tool.buildenv] table or an environments/ directory",
            hints=("run the command in the project (or pass --root DIR)",
                   "`buildenv init` makes this directory a project"))], 2)
    return here


def require_project(root: Path, given_as: str) -> None:
    """BE040 (exit 2) unless `root`, named explicitly (`--root`, `BUILDENV_ROOT`), is a project."""
    if not root.is_dir():
        raise DiagnosticError([Diagnostic("BE040", f"{given_as} {root}: no such directory")], 2)
    if not is_project(root):
        raise DiagnosticError([Diagnostic(
            "BE040", f"{given_as} {root} is not a buildenv project: it holds no pyproject.toml "
            "with a [tool.buildenv] table and no environments/ directory",
            hints=("`buildenv init` makes it one",))], 2)
