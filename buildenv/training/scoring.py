"""Scoring a model on the environment's evaluation rows: the metrics builds record and gates use.

Classification (the label declares `classes`, or is bool/string): `accuracy`, and with
`predict_proba`, `logloss` and (two classes) `roc_auc` of the last declared class. Regression:
`rmse`, `mae`, `r2`. A model is fed exactly its recorded inputs, in the serving app's types.
Promotion metrics may be named as trainings usually log them (`val_auc`, `val_logloss`, ...):
`METRIC_ALIASES` maps them to what is computed here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["METRIC_ALIASES", "ScoringError", "predictions", "score", "score_metric",
           "score_predictions"]

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
    wanted = list(inputs or getattr(model, "inputs", None) or getattr(
        model, "feature_names_in_", frame.columns))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ScoringError(f"the model reads {', '.join(missing)}, which the evaluation rows do "
                           "not serve")
    return frame[wanted]


def _has_proba(model: Any) -> bool:
    return bool(getattr(model, "has_proba", hasattr(model, "predict_proba")))


def predictions(model: Any, frame: Any, inputs: list[str] | None, restricted: bool) -> Any:
    """The model's predictions on the evaluation rows (labels and probabilities, or values),
    computed once: the metrics and the parity check both read them."""
    import numpy as np

    from buildenv.training.parity import Predictions

    X = _inputs(model, frame, inputs)
    try:
        classifier = getattr(model, "is_classifier", None)
        if classifier is None:
            classifier = hasattr(model, "classes_")
        if not classifier:
            return Predictions(None, None, np.asarray(model.predict(X), dtype=np.float64))
        labels = model.predict(X)
        proba = np.asarray(model.predict_proba(X), dtype=np.float64) if _has_proba(model) \
            else None
        return Predictions(labels, proba)
    except Exception as exc:  # the model itself failed on served rows
        detail = "details withheld: restricted data" if restricted else str(exc).strip()[:300]
        raise ScoringError(f"{type(exc).__name__} while predicting ({detail})") from None


def score_predictions(predicted: Any, labels: Any, label: Any, model_classes: list | None
                      ) -> dict[str, float]:
    """Every metric that applies to these predictions and label."""
    import numpy as np

    y = np.asarray(labels)
    keep = ~_null(y)
    if not keep.any():
        raise ScoringError("the evaluation rows hold no labelled row")
    if predicted.values is not None:
        if _is_classification(label, y[keep]):
            raise ScoringError("the model predicts numbers, but the label is a class")
        return _regression(y[keep], predicted.values[keep])
    if not _is_classification(label, y[keep]):
        raise ScoringError("the model predicts classes, but the label is a number")
    proba = predicted.proba[keep] if predicted.proba is not None else None
    return _classification(y[keep], np.asarray(predicted.labels, dtype=object)[keep], proba,
                           list(model_classes or []), getattr(label, "classes", None))


def score(model: Any, frame: Any, labels: Any, label: Any, inputs: list[str] | None,
          restricted: bool) -> dict[str, float]:
    """Every metric that applies to this model and label."""
    predicted = predictions(model, frame, inputs, restricted)
    classes = getattr(model, "classes", None)
    if classes is None and hasattr(model, "classes_"):
        classes = list(model.classes_)
    return score_predictions(predicted, labels, label, classes)


def score_metric(name: str, metrics: dict[str, float]) -> float | None:
    kind = METRIC_ALIASES.get(name)
    return metrics.get(kind) if kind else None


def _null(values: Any) -> Any:
    import numpy as np
    import pandas as pd

    return np.asarray(pd.isna(values), dtype=bool)


def _classification(y: Any, predicted: Any, proba: Any, model_classes: list,
                    classes: list | None) -> dict[str, float]:
    """Labels compared as values (a numpy bool equals Python's), whatever their type."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y, dtype=object)
    out = {"accuracy": float(np.mean(y == np.asarray(predicted, dtype=object)))}
    if proba is None or not model_classes:
        return out
    position = {_key(c): i for i, c in enumerate(model_classes)}
    codes = np.asarray([position.get(_key(v), -1) for v in y])
    if (codes >= 0).all():
        out["logloss"] = float(log_loss(codes, proba, labels=list(range(len(model_classes)))))
    if len(classes or model_classes) == 2:
        positive = _key((classes or model_classes)[-1])
        y_true = np.asarray([_key(v) == positive for v in y], dtype=bool)
        if positive in position and y_true.any() and not y_true.all():
            out["roc_auc"] = float(roc_auc_score(y_true, proba[:, position[positive]]))
    return out


def _key(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _regression(y: Any, predicted: Any) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = np.asarray(y, dtype=np.float64)
    out = {"rmse": float(np.sqrt(mean_squared_error(y, predicted))),
           "mae": float(mean_absolute_error(y, predicted))}
    if len(y) > 1:
        out["r2"] = float(r2_score(y, predicted))
    return out
