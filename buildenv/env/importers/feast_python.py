"""Feast's own Python environment: Feast 0.67 needs pandas < 3, buildenv pins pandas 3.

So Feast never runs in buildenv's process. `feast_python` returns an interpreter that has it:
`BUILDENV_FEAST_PYTHON` when set (an existing Feast installation), else a virtual environment
buildenv creates once under `.buildenv/toolchains/feast-<digest>/`, content-addressed by its
requirements and this Python's version: built aside with pip, then renamed into place, so a
killed creation leaves nothing half made; concurrent commands wait for one creation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from buildenv.core.mutex import mutex, mutex_path, mutex_timeout
from buildenv.core.project import Project

__all__ = ["FEAST_PYTHON_ENV", "REQUIREMENTS", "FeastError", "feast_python"]

FEAST_PYTHON_ENV = "BUILDENV_FEAST_PYTHON"
REQUIREMENTS = ("feast==0.67.0", "pandas<3")
CREATE_TIMEOUT = 1800.0


class FeastError(Exception):
    """A diagnostic about a Feast repository or Feast's environment: code (BE906-BE909) and
    message."""

    def __init__(self, code: str, message: str, *hints: str):
        super().__init__(message)
        self.code, self.message, self.hints = code, message, tuple(hints)


def _error(message: str, *hints: str) -> FeastError:
    return FeastError("BE909", message, *hints)


def toolchain_dir(project: Project) -> Path:
    key = "\n".join((*REQUIREMENTS, sys.version)).encode()
    return project.state_dir / "toolchains" / f"feast-{hashlib.sha256(key).hexdigest()[:16]}"


def feast_python(project: Project) -> str:
    """An interpreter with Feast; FeastError BE909 when it cannot be had."""
    explicit = os.environ.get(FEAST_PYTHON_ENV)
    if explicit:
        if not (shutil.which(explicit) or Path(explicit).is_file()):
            raise _error(f"{FEAST_PYTHON_ENV}={explicit} is not an interpreter")
        return explicit
    root = toolchain_dir(project)
    python = root / "bin" / "python"
    if python.exists():
        return str(python)
    with mutex(mutex_path(project.state_dir, "toolchain", root.name),
               f"the Feast environment {root.name}", mutex_timeout(CREATE_TIMEOUT)):
        if not python.exists():
            _create(root)
    return str(python)


def _create(root: Path) -> None:
    scratch = root.with_name(f".{root.name}.{uuid.uuid4().hex}")
    try:
        steps = [[sys.executable, "-m", "venv", str(scratch)],
                 [str(scratch / "bin" / "python"), "-m", "pip", "install", "-q",
                  "--disable-pip-version-check", *REQUIREMENTS]]
        for step in steps:
            try:
                proc = subprocess.run(step, capture_output=True, text=True,
                                      timeout=CREATE_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise _error(f"creating Feast's environment took more than "
                             f"{CREATE_TIMEOUT:g} s") from None
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise _error(f"cannot create Feast's environment ({' '.join(REQUIREMENTS)}): "
                             f"{last}", f"install Feast elsewhere and set {FEAST_PYTHON_ENV} "
                             "to its interpreter")
        scratch.rename(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
