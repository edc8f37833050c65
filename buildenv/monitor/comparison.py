"""What a monitoring report compares with what: drift (the locked version of a dataset against a
candidate version) or training/serving skew (the locked training data against serving data).

Both run the same statistics, metrics, alerts, triage and renderings; a `Comparison` says which
`monitoring` section holds the thresholds, how reports name the two sides, which codes alerts
carry, and whether the candidate is serving data (then only served columns are compared, a
served column it lacks and a training-only column it has are problems).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["DRIFT", "SKEW", "Comparison"]


@dataclass(frozen=True)
class Comparison:
    kind: str  # "drift" | "skew": the command, and the monitoring section of its thresholds
    baseline: str  # how reports name the two sides
    candidate: str
    serving: bool  # the candidate is serving data
    categorical: str  # alert codes
    numeric: str
    domain: str
    null_fraction: str

    def on_serving_data(self) -> Comparison:
        """The same comparison with serving data as the candidate (`drift --serving`)."""
        return replace(self, candidate="serving", serving=True)


DRIFT = Comparison("drift", "locked", "candidate", False, "BE601", "BE602", "BE603", "BE604")
SKEW = Comparison("skew", "training", "serving", True, "BE611", "BE612", "BE613", "BE614")
