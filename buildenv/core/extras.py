"""Optional dependencies: a command that needs one names the extra that installs it.

The base install holds what every command needs; MLflow (registering, promoting), the model
libraries (scoring models in buildenv's own process), OpenDP, Ray and signing are extras.
Asking for what an extra provides without it installed is BE026 (exit 2) with the
`pip install` line, never an ImportError. (OpenDP, Ray and signing have their own codes:
BE810, BE880, BE765.)
"""

from __future__ import annotations

import importlib.util

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["EXTRAS", "installed", "require"]

# extra -> what it is for (the diagnostic's wording)
EXTRAS = {
    "mlflow": "MLflow's client and its sqlite store",
    "models": "the model libraries (scikit-learn, pandas, ONNX tooling)",
    "ui": "MLflow's server and web UI",
}


def installed(module: str) -> bool:
    """Can `module` be imported (without importing it)?"""
    return importlib.util.find_spec(module) is not None


def require(extra: str, what: str, *modules: str) -> None:
    """BE026 unless every one of `modules` can be imported."""
    missing = [m for m in modules if not installed(m)]
    if not missing:
        return
    raise DiagnosticError([Diagnostic(
        "BE026", f"{what} needs {EXTRAS[extra]}: buildenv's `{extra}` extra, which is not "
        f"installed (no module {', '.join(repr(m) for m in missing)})",
        hints=(f"pip install 'buildenv[{extra}]'",))], 2)
