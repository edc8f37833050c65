"""Scoring a model on the environment's evaluation rows: the metrics builds record and gates use.

Classification (the label declares `classes`, or is bool/string): `accuracy`, and with
`predict_proba`, `logloss` and (two classes) `roc_auc` of the last declared class. Regression:
`rmse`, `mae`, `r2`. A model is fed exactly its recorded inputs, in the serving app's types.
Promotion metrics may be named as trainings usually log them (`val_auc`, `val_logloss`, ...):
`METRIC_ALIASES` maps them to what is computed here.

Two steps: `predict` is the one place that calls the model (its outputs become arrays,
`training.outputs`), and `metrics` computes from those arrays; slices and their intervals
(`training.slice_scores`) start from the same outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from buildenv.training.outputs import Outputs

# Deferred imports (pandas, sklearn): `buildenv history` and `rollback` import this module
# through the promotion gates and score nothing.

__all__ = ["METRIC_ALIASES", "ScoringError", "labelled", "metrics", "predict", "score",
           "score_metric"]

METRIC_ALIASES = {
    "val_auc": "roc_auc", "auc": "roc_auc", "roc_auc": "roc_auc", "val_roc_auc": "roc_auc",
    "val_logloss": "logloss", "logloss": "logloss", "log_loss": "logloss",
    "val_log_loss": "logloss", "accuracy": "accuracy", "val_accuracy": "accuracy",
    "rmse": "rmse", "val_rmse": "rmse", "mae": "mae", "val_mae": "mae", "r2": "r2",
    "val_r2": "r2",
}


class ScoringError(Exception):
    """The model could not be scored; the message is safe to show (no row values)."""


def _is_classification(label: Any, labels: Any) -> bool:
    if getattr(label, "classes", None):
        return True
    values = np.asarray(labels)
    return values.dtype == bool or values.dtype.kind in "OUS"


def _inputs(model: Any, frame: Any, inputs: list[str] | None) -> Any:
    wanted = list(inputs or getattr(model, "inputs", None) or getattr(
        model, "feature_names_in_", frame.columns))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ScoringError(f"the model reads {', '.join(missing)}, which the evaluation rows do "
                           "not serve")
    return frame[wanted]


def labelled(labels: Any) -> np.ndarray:
    """Which evaluation rows hold a label (the rows every metric is computed on)."""
    import pandas as pd

    return ~np.asarray(pd.isna(np.asarray(labels)), dtype=bool)


def _natural(values: Any) -> np.ndarray:
    """Predicted labels with the dtype their values have (an object array of bools, as a model
    answering with the environment's classes gives, becomes a bool array)."""
    array = np.asarray(values)
    return np.asarray(array.tolist()) if array.dtype == object and len(array) else array


def predict(model: Any, frame: Any, labels: Any, label: Any, inputs: list[str] | None,
            restricted: bool) -> Outputs:
    """The model's outputs on the labelled evaluation rows: any object with `predict` (and,
    for probabilities, `predict_proba` and `classes_`; `has_proba` when it says whether it
    has them): a fitted estimator, a model family (`training.families`), a served model."""
    X = _inputs(model, frame, inputs)
    y = np.asarray(labels)
    keep = labelled(y)
    X, y = X[keep], y[keep]
    if not len(y):
        raise ScoringError("the evaluation rows hold no labelled row")
    try:
        if _is_classification(label, y):
            declared = getattr(label, "classes", None)
            proba = classes = positive = None
            if getattr(model, "has_proba", hasattr(model, "predict_proba")):
                proba = np.asarray(model.predict_proba(X), dtype=np.float64)
                classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
                if len(declared or classes) == 2:
                    positive = (declared or classes)[-1]
            return Outputs("classification", y, _natural(model.predict(X)), proba, classes,
                           positive)
        return Outputs("regression", y, np.asarray(model.predict(X), dtype=np.float64))
    except ScoringError:
        raise
    except Exception as exc:  # the model itself failed on served rows
        detail = "details withheld: restricted data" if restricted else str(exc).strip()[:300]
        raise ScoringError(f"{type(exc).__name__} while predicting ({detail})") from None


def metrics(outputs: Outputs) -> dict[str, float]:
    """Every metric that applies to these outputs."""
    if outputs.kind == "classification":
        return _classification(outputs)
    return _regression(outputs)


def score(model: Any, frame: Any, labels: Any, label: Any, inputs: list[str] | None,
          restricted: bool) -> dict[str, float]:
    """Every metric that applies to this model and label."""
    return metrics(predict(model, frame, labels, label, inputs, restricted))


def score_metric(name: str, metrics: dict[str, float]) -> float | None:
    kind = METRIC_ALIASES.get(name)
    return metrics.get(kind) if kind else None


def _classification(out: Outputs) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    y = out.truth
    result = {"accuracy": float(accuracy_score(y, out.predicted))}
    if out.proba is None or out.classes is None:
        return result
    try:
        result["logloss"] = float(log_loss(y, y_proba=out.proba, labels=out.classes))
    except ValueError:
        pass  # a label the model never saw: logloss is undefined
    if out.positive is not None:
        y_true = np.asarray(y) == out.positive
        if out.positive in out.classes and y_true.any() and not y_true.all():
            column = out.proba[:, out.classes.index(out.positive)]
            result["roc_auc"] = float(roc_auc_score(y_true, column))
    return result


def _regression(out: Outputs) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = np.asarray(out.truth, dtype=np.float64)
    predicted = out.predicted
    result = {"rmse": float(np.sqrt(mean_squared_error(y, predicted))),
              "mae": float(mean_absolute_error(y, predicted))}
    if len(y) > 1:
        result["r2"] = float(r2_score(y, predicted))
    return result
