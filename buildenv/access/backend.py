"""OpenDP, the optional dependency behind every private release.

`buildenv stats` (on restricted data) and `buildenv synth` need OpenDP with its Polars and
Private-PGM (`mbi`) extras: `pip install 'buildenv[privacy]'`. Everything else in buildenv works
without it, so it is imported here, when a private release is asked for, and a missing install
is a diagnostic naming the extra rather than a traceback. OpenDP keeps its not-yet-vetted
constructors behind `enable_features("contrib")`; the mechanisms buildenv uses (Laplace noise on
counts and bounded sums, thresholded key release, MST) are among them, so it is enabled here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["EXTRA", "opendp", "polars", "prelude"]

EXTRA = "pip install 'buildenv[privacy]'"


def _missing(what: str, exc: ImportError) -> DiagnosticError:
    name = getattr(exc, "name", None) or str(exc)
    return DiagnosticError([Diagnostic(
        "BE810", f"{what} needs OpenDP with its Polars and mbi extras, which are not installed "
        f"(cannot import {name})", hints=(f"install buildenv's privacy extra: {EXTRA}",))], 2)


def opendp(what: str = "a differentially private release") -> Any:
    """OpenDP's core API (constructors, domains, metrics, searches), contrib enabled, under the
    names `opendp.prelude` gives them. The prelude itself also imports every integration
    (scikit-learn, Ibis, JAX through mbi), which costs seconds that statistics do not need."""
    try:
        import opendp.accuracy as accuracy  # pants: no-infer-dep
        import opendp.combinators as c  # pants: no-infer-dep
        import opendp.domains as domains  # pants: no-infer-dep
        import opendp.measurements as m  # pants: no-infer-dep
        import opendp.metrics as metrics  # pants: no-infer-dep
        import opendp.mod as mod  # pants: no-infer-dep
        import opendp.transformations as t  # pants: no-infer-dep
    except ImportError as exc:
        raise _missing(what, exc) from None
    mod.enable_features("contrib")
    return SimpleNamespace(
        t=t, m=m, c=c, accuracy=accuracy, vector_domain=domains.vector_domain,
        atom_domain=domains.atom_domain, symmetric_distance=metrics.symmetric_distance,
        absolute_distance=metrics.absolute_distance,
        binary_search=mod.binary_search, binary_search_param=mod.binary_search_param)


def prelude(what: str) -> Any:
    """`opendp.prelude` (the Context API and every integration), contrib enabled."""
    try:
        import opendp.prelude as dp  # pants: no-infer-dep
    except ImportError as exc:
        raise _missing(what, exc) from None
    dp.enable_features("contrib")
    return dp


def polars(what: str = "synthetic data") -> Any:
    """Polars and Private-PGM as OpenDP's integrations use them (synthesis)."""
    dp = prelude(what)
    try:
        import mbi  # noqa: F401  # pants: no-infer-dep (Private-PGM, and JAX)
        import polars as pl  # pants: no-infer-dep
    except ImportError as exc:
        raise _missing(what, exc) from None
    return dp, pl
