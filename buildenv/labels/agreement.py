"""Inter-annotator agreement of a label set: Fleiss' and Cohen's kappa.

Both use each annotator's latest annotation of an example (the vote that counts, see
`resolve`), over the examples at least two annotators labeled.

- **Fleiss' kappa**, for any number of annotators per example (the form for varying numbers
  of raters): per example i with n_i ratings, P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1));
  p_j = the share of all ratings in class j; kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2).
- **Cohen's kappa**, per pair of annotators over the examples both labeled,
  (p_o - p_e) / (1 - p_e) with p_e from the two annotators' own class shares on those
  examples; reported as the mean over pairs weighted by shared examples (pairs whose p_e is 1
  have no kappa and are left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from buildenv.labels.annotations import Annotations
from buildenv.labels.resolve import dictionary_codes, latest_per_annotator

__all__ = ["agreement", "cohen_kappa", "fleiss_kappa"]

MAX_PAIR_CELLS = 50_000_000  # pairs x classes held at once for Cohen's kappa


def fleiss_kappa(item: np.ndarray, label: np.ndarray, classes: int) -> tuple[float | None, int]:
    """(kappa, examples used) from one rating per row: example code, class code."""
    if not len(item):
        return None, 0
    n_i = np.bincount(item)
    multi = n_i >= 2
    if not multi.any():
        return None, 0
    keep = multi[item]
    dense = np.full(len(n_i), -1, np.int64)
    dense[multi] = np.arange(int(multi.sum()))
    m = int(multi.sum())
    cells = np.bincount(dense[item[keep]] * classes + label[keep],
                        minlength=m * classes).reshape(m, classes)
    n = n_i[multi].astype(np.float64)
    p_i = ((cells.astype(np.float64) ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_j = cells.sum(axis=0) / cells.sum()
    p_e = float((p_j ** 2).sum())
    if p_e >= 1.0:
        return None, int(multi.sum())
    return float((p_i.mean() - p_e) / (1 - p_e)), int(multi.sum())


def cohen_kappa(item: np.ndarray, rater: np.ndarray, label: np.ndarray, classes: int
                ) -> tuple[float | None, int]:
    """(mean pairwise kappa weighted by shared examples, pairs used)."""
    if not len(item):
        return None, 0
    order = np.lexsort((rater, item))
    item, rater, label = item[order], rater[order], label[order]
    starts = np.flatnonzero(np.concatenate([[True], item[1:] != item[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(item)]]))
    a_idx, b_idx = [], []
    for size in np.unique(sizes[sizes >= 2]):
        base = starts[sizes == size]
        i, j = np.triu_indices(int(size), k=1)
        a_idx.append((base[:, None] + i[None, :]).ravel())
        b_idx.append((base[:, None] + j[None, :]).ravel())
    if not a_idx:
        return None, 0
    a, b = np.concatenate(a_idx), np.concatenate(b_idx)
    ra, rb, la, lb = rater[a], rater[b], label[a], label[b]
    raters = int(rater.max()) + 1
    pair = ra.astype(np.int64) * raters + rb
    pairs, pair_code = np.unique(pair, return_inverse=True)
    if len(pairs) * classes > MAX_PAIR_CELLS:
        return None, len(pairs)
    n = np.bincount(pair_code, minlength=len(pairs)).astype(np.float64)
    agree = np.bincount(pair_code, weights=(la == lb).astype(np.float64), minlength=len(pairs))
    shape = (len(pairs), classes)
    ma = np.bincount(pair_code * classes + la, minlength=shape[0] * classes).reshape(shape)
    mb = np.bincount(pair_code * classes + lb, minlength=shape[0] * classes).reshape(shape)
    p_o = agree / n
    p_e = (ma * mb).sum(axis=1) / (n * n)
    ok = p_e < 1.0
    if not ok.any():
        return None, 0
    kappa = (p_o[ok] - p_e[ok]) / (1 - p_e[ok])
    return float(np.average(kappa, weights=n[ok])), int(ok.sum())


def agreement(annotations: Annotations) -> dict[str, Any]:
    """Fleiss' and Cohen's kappa of the set's own annotations (None where undefined)."""
    chosen = latest_per_annotator(annotations)
    if not len(chosen):
        return {"fleiss_kappa": None, "cohen_kappa": None, "examples": 0, "pairs": 0}

    take = pa.array(chosen)
    item, _ = dictionary_codes(annotations.keys.take(take))
    rater, _ = dictionary_codes(annotations.annotators.take(take))
    label, classes = dictionary_codes(annotations.labels.take(take))
    fleiss, examples = fleiss_kappa(item, label, max(len(classes), 1))
    cohen, pairs = cohen_kappa(item, rater, label, max(len(classes), 1))
    return {"fleiss_kappa": None if fleiss is None else round(fleiss, 4),
            "cohen_kappa": None if cohen is None else round(cohen, 4),
            "examples": examples, "pairs": pairs}
