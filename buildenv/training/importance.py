"""Which inputs the model relies on: permutation importance on the served model.

Computed on up to `ROWS` evaluation rows with the model production runs (onnxruntime for the
`onnx` stack), so drift alerts are ranked by what serving depends on. The score is the model's
default one (accuracy for classifiers, R² for regressors), as scikit-learn's
`permutation_importance` computes it: importance is the mean drop over `REPEATS` shuffles of
one column, clipped at 0, as a share of the total. Without evaluation rows, the model's own
`feature_importances_` (when it has them) stands in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score

__all__ = ["REPEATS", "ROWS", "model_importance", "permutation"]

ROWS = 1000
REPEATS = 3


class _Scored:
    """What permutation_importance calls: predictions of the served model on a frame."""

    def __init__(self, served: Any) -> None:
        self.served = served

    def fit(self, X: Any, y: Any) -> _Scored:
        return self


def _score(classifier: bool) -> Any:
    def score(est: _Scored, X: Any, y: Any) -> float:
        predicted = est.served.predict(X)
        if classifier:  # accuracy, labels compared as values (numpy bools equal Python's)
            return float(np.mean(np.asarray(y, dtype=object) ==
                                 np.asarray(predicted, dtype=object)))
        return float(r2_score(y, predicted))

    return score


def permutation(served: Any, frame: Any, labels: Any, seed: int, inputs: list[str],
                classifier: bool) -> dict:
    try:
        X, y = frame[inputs], np.asarray(labels)
        keep = ~np.asarray(_null(y), dtype=bool)
        X, y = X[keep], y[keep]
        if len(X) > ROWS:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(X), ROWS, replace=False))
            X, y = X.iloc[idx], y[idx]
        result = permutation_importance(_Scored(served), X, y, scoring=_score(classifier),
                                        n_repeats=REPEATS, random_state=seed, n_jobs=1)
        raw = [max(0.0, float(v)) for v in result.importances_mean]
        total = sum(raw)
        shares = [v / total if total > 0 else 0.0 for v in raw]
        order = sorted(range(len(inputs)), key=lambda i: (-shares[i], inputs[i]))
        return {"method": "permutation", "features": {
            inputs[i]: {"importance": round(shares[i], 6), "score_drop": round(raw[i], 6),
                        "rank": order.index(i) + 1} for i in range(len(inputs))}}
    except Exception as exc:  # importance is advisory: never fail a build on it
        return {"method": "none", "error": f"{type(exc).__name__}: {exc}", "features": {}}


def _null(values: Any) -> Any:
    return pd.isna(values)


def model_importance(model: Any, inputs: list[str] | None) -> dict:
    """The model's own `feature_importances_` (no evaluation rows to permute)."""
    values = getattr(model, "feature_importances_", None)
    if values is None or not inputs or len(values) != len(inputs):
        return {"method": "none", "features": {}}
    total = float(sum(values)) or 1.0
    order = sorted(range(len(inputs)), key=lambda i: (-values[i], inputs[i]))
    return {"method": "model", "features": {
        inputs[i]: {"importance": round(float(values[i]) / total, 6), "rank": order.index(i) + 1}
        for i in range(len(inputs))}}
