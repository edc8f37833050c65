"""Scoring a model on the environment's evaluation rows: the metrics builds record and gates use.

Classification (the label declares `classes`, or is bool/string): `accuracy`, and with
`predict_proba`, `logloss` and (two classes) `roc_auc` of the last declared class. Regression:
`rmse`, `mae`, `r2`. A model is fed exactly its recorded inputs, in the serving app's types.
Promotion metrics may be named as trainings usually log them (`val_auc`, `val_logloss`, ...):
`METRIC_ALIASES` maps them to what is computed here.
"""

from __future__ import annotations

from typing import Any

# Deferred imports (numpy, pandas, sklearn): `buildenv history` and `rollback` import this module
# through the promotion gates and score nothing.

__all__ = ["METRIC_ALIASES", "ScoringError", "score", "score_metric"]

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
    import numpy as np

    if getattr(label, "classes", None):
        return True
    values = np.asarray(labels)
    return values.dtype == bool or values.dtype.kind in "OUS"


def _inputs(model: Any, frame: Any, inputs: list[str] | None) -> Any:
    wanted = list(inputs or getattr(model, "feature_names_in_", frame.columns))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ScoringError(f"the model reads {', '.join(missing)}, which the evaluation rows do "
                           "not serve")
    return frame[wanted]


def score(model: Any, frame: Any, labels: Any, label: Any, inputs: list[str] | None,
          restricted: bool) -> dict[str, float]:
    """Every metric that applies to this model and label."""
    import numpy as np

    X = _inputs(model, frame, inputs)
    y = np.asarray(labels)
    keep = ~_null(y)
    X, y = X[keep], y[keep]
    if not len(y):
        raise ScoringError("the evaluation rows hold no labelled row")
    try:
        if _is_classification(label, y):
            return _classification(model, X, y, getattr(label, "classes", None))
        return _regression(model, X, y)
    except ScoringError:
        raise
    except Exception as exc:  # the model itself failed on served rows
        detail = "details withheld: restricted data" if restricted else str(exc).strip()[:300]
        raise ScoringError(f"{type(exc).__name__} while predicting ({detail})") from None


def score_metric(name: str, metrics: dict[str, float]) -> float | None:
    kind = METRIC_ALIASES.get(name)
    return metrics.get(kind) if kind else None


def _null(values: Any) -> Any:
    import numpy as np
    import pandas as pd

    return np.asarray(pd.isna(values), dtype=bool)


def _classification(model: Any, X: Any, y: Any, classes: list | None) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    out = {"accuracy": float(accuracy_score(y, model.predict(X)))}
    if not hasattr(model, "predict_proba"):
        return out
    proba = model.predict_proba(X)
    model_classes = list(model.classes_)
    try:
        out["logloss"] = float(log_loss(y, proba, labels=model_classes))
    except ValueError:
        pass  # a label the model never saw: logloss is undefined
    if len(classes or model_classes) == 2:
        positive = (classes or model_classes)[-1]
        y_true = np.asarray(y) == positive
        if positive in model_classes and y_true.any() and not y_true.all():
            out["roc_auc"] = float(roc_auc_score(y_true,
                                                 proba[:, model_classes.index(positive)]))
    return out


def _regression(model: Any, X: Any, y: Any) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    predicted = model.predict(X)
    y = np.asarray(y, dtype=np.float64)
    out = {"rmse": float(np.sqrt(mean_squared_error(y, predicted))),
           "mae": float(mean_absolute_error(y, predicted))}
    if len(y) > 1:
        out["r2"] = float(r2_score(y, predicted))
    return out
