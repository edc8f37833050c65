"""How close a synthetic dataset is to what was privately measured of the real one.

Per column: the L-infinity distance (largest difference of any cell's frequency) and the
Jensen-Shannon divergence (log base 2, as drift uses) between the synthetic marginal and the
one-way marginal OpenDP released while fitting the model. For one pair of columns the user
names: the same distances on their joint distribution, synthetic vs the privately fitted model,
and the mutual information of the pair on each side (how strongly one column tells about the
other). Everything compared is already differentially private or synthetic: the report costs no
budget and shows no row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["distribution", "jsd", "linf", "mutual_information", "pair_report"]


def distribution(counts: np.ndarray) -> np.ndarray:
    """Frequencies from (possibly noisy, negative) counts."""
    values = np.clip(np.asarray(counts, dtype=np.float64), 0, None)
    total = values.sum()
    if total <= 0:
        return np.full(values.shape, 1.0 / values.size)
    return np.asarray(values / total)


def linf(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.max(np.abs(np.ravel(p) - np.ravel(q))))


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.ravel(p), np.ravel(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def mutual_information(joint: np.ndarray) -> float:
    """In bits, of a 2-d frequency table."""
    joint = distribution(joint)
    rows, cols = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    expected = rows * cols
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log2(joint[mask] / expected[mask])))


def pair_report(a: str, b: str, synthetic: np.ndarray, model: np.ndarray,
                measured: bool) -> dict[str, Any]:
    p, q = distribution(synthetic), distribution(model)
    return {"columns": [a, b], "linf": linf(p, q), "jsd": jsd(p, q),
            "mutual_information": {"synthetic": mutual_information(p),
                                   "private_model": mutual_information(q)},
            "measured_directly": measured}
