"""Parity: the served model against the trained one, on the environment's evaluation rows.

A row agrees when its predicted label is the same and each probability (or, for a regressor,
the value) is within `serving.parity`: `|served - trained| <= atol + rtol * |trained|`. A label
that flips where the trained model's two most likely classes are within twice that tolerance
of each other is a near-tie: float32 arithmetic may decide it either way, so it is recorded and
explained, not refused. The report holds what a reviewer needs and nothing from the rows
themselves: counts, a histogram of the absolute differences by decade, the worst rows (by
position among the evaluation rows) with their distance and tolerance, and the flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

__all__ = ["DECADES", "Predictions", "compare"]

DECADES = tuple(10.0 ** e for e in range(-12, 1))  # histogram edges: 1e-12 ... 1
WORST = 5


@dataclass
class Predictions:
    labels: Any | None  # environment values (classifiers)
    proba: Any | None  # [rows, classes] (classifiers with probabilities)
    values: Any | None = None  # [rows] (regressors)


def _histogram(diff: np.ndarray) -> dict[str, int]:
    """Counts of |difference| by decade: `0`, `<1e-12`, `1e-12..1e-11`, ..., `>=1`."""
    flat = diff.reshape(-1)
    out = {"0": int(np.count_nonzero(flat == 0))}
    nonzero = flat[flat > 0]
    edges = np.asarray(DECADES)
    bins = np.searchsorted(edges, nonzero, side="right")
    labels = ["<1e-12"] + [f"1e{int(np.log10(lo))}..1e{int(np.log10(hi))}"
                           for lo, hi in pairwise(DECADES)] + [">=1"]
    counts = np.bincount(bins, minlength=len(labels))
    out.update({label: int(n) for label, n in zip(labels, counts) if n})
    return out


def compare(trained: Predictions, served: Predictions, atol: float, rtol: float,
            what: str) -> tuple[dict, str | None]:
    """(report for the lineage, the reason parity failed or None). `what` names the served
    runtime in messages."""
    if trained.values is not None:
        ref = np.asarray(trained.values, dtype=np.float64).reshape(-1)
        got = np.asarray(served.values, dtype=np.float64).reshape(-1)
        return _numeric(ref, got, atol, rtol, what, "value")
    ref_labels = np.asarray(trained.labels, dtype=object).reshape(-1)
    got_labels = np.asarray(served.labels, dtype=object).reshape(-1)
    rows = len(ref_labels)
    flipped = np.flatnonzero(np.asarray([_key(a) != _key(b) for a, b in
                                         zip(ref_labels, got_labels)], dtype=bool))
    report: dict = {"rows": rows, "atol": atol, "rtol": rtol, "label_flips": len(flipped)}
    reason = None
    if trained.proba is not None and served.proba is not None:
        ref = np.asarray(trained.proba, dtype=np.float64)
        got = np.asarray(served.proba, dtype=np.float64)
        if ref.shape != got.shape:
            return report, (f"{what} gives probabilities of shape {got.shape}, the trained "
                            f"model {ref.shape}")
        numeric, reason = _numeric(ref, got, atol, rtol, what, "probability")
        report.update({k: v for k, v in numeric.items() if k not in ("rows", "atol", "rtol")})
        tolerance = atol + rtol * np.abs(ref)
        top = np.sort(ref, axis=1)
        margin = top[:, -1] - top[:, -2] if ref.ndim == 2 and ref.shape[-1] > 1 \
            else np.ones(len(ref))
        near = [int(i) for i in flipped if margin[i] <= 2 * tolerance[i].max()]
        unexplained = [int(i) for i in flipped if int(i) not in set(near)]
        report["flips"] = [{"row": int(i), "margin": float(f"{margin[i]:.3g}"),
                            "near_tie": int(i) in set(near)} for i in flipped[:WORST]]
        report["near_ties"] = len(near)
    else:
        unexplained = [int(i) for i in flipped]
        report["flips"] = [{"row": int(i), "near_tie": False} for i in flipped[:WORST]]
        report["near_ties"] = 0
    if unexplained and reason is None:
        reason = (f"{what} predicts another label than the trained model on "
                  f"{len(unexplained)} of {rows} evaluation rows (first: row {unexplained[0]}),"
                  " not explained by a near-tie")
    return report, reason


def _key(value: Any) -> Any:
    """Labels compared as values (numpy bools and ints equal Python's)."""
    return value.item() if hasattr(value, "item") else value


def _numeric(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, what: str,
             kind: str) -> tuple[dict, str | None]:
    if ref.shape != got.shape:
        return {"rows": len(ref)}, f"{what} answers {got.shape}, the trained model {ref.shape}"
    diff = np.abs(got - ref)
    both_nan = np.isnan(got) & np.isnan(ref)
    diff = np.where(both_nan, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    tolerance = atol + rtol * np.abs(np.nan_to_num(ref))
    rows = max(len(ref), 1)
    per_row = (diff - tolerance).reshape(rows, -1).max(axis=1)
    row_diff = diff.reshape(rows, -1).max(axis=1)
    row_tol = tolerance.reshape(rows, -1).max(axis=1)
    order = np.lexsort((np.arange(len(row_diff)), -row_diff))  # largest difference first
    worst_rows = [i for i in order[:WORST] if row_diff[i] > 0] if len(ref) else []
    outside = int(np.count_nonzero(per_row > 0)) if len(ref) else 0
    report = {
        "rows": len(ref), "atol": atol, "rtol": rtol,
        f"max_{kind}_diff": float(f"{float(diff.max()) if diff.size else 0.0:.3g}"),
        "histogram": _histogram(diff),
        "worst": [{"row": int(i), "diff": float(f"{row_diff[i]:.3g}"),
                   "tolerance": float(f"{row_tol[i]:.3g}")} for i in worst_rows],
        "outside_tolerance": outside,
    }
    reason = None
    if outside:
        i = int(np.argmax(per_row))
        reason = (f"{what} differs from the trained model by more than serving.parity on "
                  f"{outside} of {len(ref)} evaluation rows (worst: row {i}, {kind} difference "
                  f"{row_diff[i]:.3g} > tolerance {row_tol[i]:.3g})")
    return report, reason
