"""How drift and training/serving skew are judged: the `monitoring` section of the format.

Kept apart from `spec` (which re-exports these models) so that the format reads in parts of a
readable size; `buildenv.monitor` reads them through the resolved environment.
"""

# Annotations not postponed: see `buildenv.env.spec_base`.
from typing import Annotated

from pydantic import Field

from buildenv.env.spec_base import Strict

__all__ = ["Drift", "DriftThreshold", "Monitoring", "Skew", "SkewThreshold"]


class DriftThreshold(Strict):
    """Drift thresholds; the meaning of `linf` and `jsd` matches TFDV's, so TFX thresholds carry
    over."""

    linf: Annotated[float, Field(gt=0, le=1)] | None = None
    """Categorical: largest absolute change of any value's frequency (L-infinity distance)."""
    jsd: Annotated[float, Field(gt=0, le=1)] | None = None
    """Jensen-Shannon divergence (log base 2) between the two distributions."""
    psi: Annotated[float, Field(gt=0)] | None = None
    """Numeric: population stability index over shared quantile bins."""
    null_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    """Largest allowed absolute change of the null fraction."""


class Drift(Strict):
    """Drift thresholds by column type, overridable per column."""

    categorical: DriftThreshold = DriftThreshold(linf=0.1)
    """Defaults for string and bool columns."""
    numeric: DriftThreshold = DriftThreshold(psi=0.2)
    """Defaults for numeric and temporal columns."""
    columns: dict[str, DriftThreshold] = {}
    """Per-column overrides, by column name."""


class SkewThreshold(DriftThreshold):
    """Training/serving skew thresholds: drift's statistics, with the locked training data as
    the baseline and serving data as the candidate, plus `mismatch` for joined examples."""

    mismatch: Annotated[float, Field(ge=0, le=1)] | None = None
    """With `buildenv skew --key`: largest allowed share of joined examples whose value at
    serving differs from the training value of the same key (feature-value skew)."""


class Skew(Strict):
    """Training/serving skew thresholds by column type, overridable per column (TFDV's
    `skew_comparator`)."""

    categorical: SkewThreshold = SkewThreshold(linf=0.1, mismatch=0.01)
    """Defaults for string and bool columns."""
    numeric: SkewThreshold = SkewThreshold(psi=0.2, mismatch=0.01)
    """Defaults for numeric and temporal columns."""
    columns: dict[str, SkewThreshold] = {}
    """Per-column overrides, by column name."""


class Monitoring(Strict):
    """How drift and training/serving skew are judged and which alerts matter."""

    drift: Drift = Drift()
    """Thresholds."""
    skew: Skew = Skew()
    """Training/serving skew thresholds (`buildenv skew`)."""
    min_importance: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Alerts on features whose importance in every model using them is below this are
    suppressed (and counted)."""
