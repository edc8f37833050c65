"""What a model said about the evaluation rows, as arrays: the input of every metric.

Metrics, overall and per slice, are computed from these arrays, never from the model object,
so every model family (scikit-learn, boosted trees, PyTorch, ONNX) is scored the same way once
its predictions are here. `row_stats` turns them into per-row figures whose sums make the
metrics, which is what lets the bootstrap resample every slice at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Outputs", "RowStats"]


@dataclass(frozen=True)
class RowStats:
    """Per-row figures of one model on the evaluation rows (labelled rows only).

    Classification: `correct` (0/1), `loss` (log loss of the true class, when the model gives
    probabilities of every class seen), and for two classes `score` (probability of the
    positive class) with `positive` (the row is of that class). Regression: `se`, `ae`, `y`,
    `yy` (squared error, absolute error, the label and its square)."""

    kind: Literal["classification", "regression"]
    sums: dict[str, np.ndarray]  # name -> float64 per row: metrics are ratios of their sums
    score: np.ndarray | None = None
    positive: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.sums.values())))


@dataclass(frozen=True)
class Outputs:
    """One model's outputs on the labelled evaluation rows."""

    kind: Literal["classification", "regression"]
    truth: np.ndarray  # the labels
    predicted: np.ndarray  # predicted labels (classification) or values (regression)
    proba: np.ndarray | None = None  # (rows, classes): probabilities in `classes` order
    classes: list[Any] | None = None  # the model's class order
    positive: Any = None  # two declared classes: the last one (roc_auc is of it)

    def row_stats(self) -> RowStats:
        if self.kind == "regression":
            y = np.asarray(self.truth, dtype=np.float64)
            err = np.asarray(self.predicted, dtype=np.float64) - y
            return RowStats("regression", {"se": err * err, "ae": np.abs(err), "y": y,
                                           "yy": y * y})
        truth = np.asarray(self.truth)
        sums = {"correct": (np.asarray(self.predicted) == truth).astype(np.float64)}
        score = positive = None
        if self.proba is not None and self.classes is not None:
            loss = self._loss(truth)
            if loss is not None:
                sums["loss"] = loss
            if self.positive is not None and self.positive in self.classes:
                score = np.asarray(self.proba[:, self.classes.index(self.positive)],
                                   dtype=np.float64)
                positive = truth == self.positive
        return RowStats("classification", sums, score, positive)

    def _loss(self, truth: np.ndarray) -> np.ndarray | None:
        """-log p(true class), probabilities clipped to [eps, 1 - eps] as scikit-learn's
        log_loss does; None when a label is not among the model's classes (undefined)."""
        assert self.proba is not None and self.classes is not None
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            column = np.fromiter((index[v] for v in truth.tolist()), dtype=np.int64,
                                 count=len(truth))
        except (KeyError, TypeError):
            return None
        proba = np.asarray(self.proba, dtype=np.float64)
        eps = np.finfo(proba.dtype).eps
        p = np.clip(proba[np.arange(len(truth)), column], eps, 1 - eps)
        return -np.log(p)
