"""Which inputs the model relies on: permutation importance on the served model.

Computed on up to `ROWS` evaluation rows with the model production runs (onnxruntime for the
`onnx` stack), so drift alerts are ranked by what serving depends on. The score is the model's
default one (accuracy for classifiers, R² for regressors): importance is the mean drop over
`REPEATS` shuffles of one column, clipped at 0, as a share of the total. Without evaluation
rows, the model's own `feature_importances_` (when it has them) stands in.

The shuffles are drawn as scikit-learn's `permutation_importance` draws them for an integer
`random_state` (`shuffles`), so the drops are the ones it computes; but instead of one
prediction per shuffle (one per input and repeat, plus the baseline), the permuted copies are
stacked and predicted in `PARTS` calls at once (more when `CELLS` bounds them): the same rows,
a few calls' overhead, on the cores the fit has left (the trees' traversal, scikit-learn's and
onnxruntime's, runs without the interpreter's lock; the served model already answers parity's
thread at the same time). Each row's prediction does not depend on the rows beside it, so the
scores are the same however the copies are split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score

__all__ = ["CELLS", "PARTS", "REPEATS", "ROWS", "model_importance", "permutation", "shuffles"]

ROWS = 1000
REPEATS = 3
CELLS = 4_000_000  # rows x inputs handed to the prediction calls at once: bounds the copies
PARTS = 2  # prediction calls at once (threads), each on a share of the stacked copies


def shuffles(rows: int, seed: int) -> list[np.ndarray]:
    """The row order of a permuted column in each repeat (the same for every column): a seed
    drawn from `RandomState(seed)` seeds a generator that shuffles one index array in place
    per repeat, and each repeat permutes the column the previous one left."""
    drawn = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    rng = np.random.RandomState(drawn)
    order, current, out = np.arange(rows), np.arange(rows), []
    for _ in range(REPEATS):
        rng.shuffle(order)
        current = current[order]
        out.append(current)
    return out


def _stacked(X: Any, blocks: list[tuple[int, int]], orders: list[np.ndarray]) -> Any:
    """Copies of `X` one under the other: block (k, r) has column k in the order of repeat r
    (k = -1: no column permuted). Each column keeps its dtype."""
    plain = np.arange(len(X))
    columns = {}
    for k, name in enumerate(X.columns):
        index = np.concatenate([orders[r] if j == k else plain for j, r in blocks])
        columns[name] = X.iloc[:, k].take(index).reset_index(drop=True)
    return pd.DataFrame(columns)


def _scores(served: Any, X: Any, y: Any, classifier: bool, seed: int) -> list[float]:
    """The score of the unpermuted rows, then of each (input, repeat) in order."""
    n = len(X)
    orders = shuffles(n, seed)
    blocks = [(-1, 0)] + [(k, r) for k in range(X.shape[1]) for r in range(REPEATS)]
    bounded = max(1, CELLS // PARTS // max(1, n * X.shape[1]))
    per_call = min(bounded, -(-len(blocks) // PARTS))
    truth = np.asarray(y, dtype=object) if classifier else y
    chunks = [blocks[start:start + per_call] for start in range(0, len(blocks), per_call)]

    def predict(chunk: list[tuple[int, int]]) -> Any:
        return served.predict(_stacked(X, chunk, orders))

    with ThreadPoolExecutor(max_workers=PARTS, thread_name_prefix="buildenv-importance") as pool:
        answers = list(pool.map(predict, chunks))
    scores: list[float] = []
    for chunk, predicted in zip(chunks, answers, strict=True):
        predicted = np.asarray(predicted, dtype=object) if classifier else np.asarray(predicted)
        for i in range(len(chunk)):
            part = predicted[i * n:(i + 1) * n]
            if classifier:  # accuracy, labels compared as values (numpy bools equal Python's)
                scores.append(float(np.mean(truth == part)))
            else:
                scores.append(float(r2_score(truth, part)))
    return scores


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
        if not len(X):
            raise ValueError("no labelled evaluation row")
        scores = np.asarray(_scores(served, X, y, classifier, seed))
        drops = np.mean(scores[0] - scores[1:].reshape(len(inputs), REPEATS), axis=1)
        raw = [max(0.0, float(v)) for v in drops]
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
