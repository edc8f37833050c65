"""What may be shown of slice scores: the environment's privacy policy applied.

Evaluation rows of a restricted dataset are shown only in aggregate, and a slice is an
aggregate over few rows: with `privacy.release: exact` (the default) a slice with fewer rows
than `privacy.min_group_size` is withheld -- its rows and metrics, and for a `by` slice its
name, which is a value of the data (the number of such slices is given). With `release: dp`
every figure of a slice is released through OpenDP (`training.slice_dp`). Public evaluation
rows are shown exactly. Gates never read this view: they decide on `SliceScores` in the
process that computed them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from buildenv.env.spec import Environment
from buildenv.training.bootstrap import METRICS
from buildenv.training.slice_scores import SliceScores
from buildenv.training.slicing import Family

__all__ = ["exact_view", "figures", "mlflow_key", "slice_spec"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(name: str) -> str:
    """A slice name as an MLflow metric name takes it (`carrier=UA` -> `carrier/UA`)."""
    by, eq, value = name.partition("=")
    text = f"{by}/{value}" if eq else name
    text = text.replace(", ", "_to_").replace("[", "").replace(")", "").replace("]", "")
    return _UNSAFE.sub("_", text)


def slice_spec(env: Environment, family: Family) -> dict[str, Any]:
    """How a family was declared, for the record."""
    spec = env.evaluation.slices[family.index] if family.index is not None else None
    if spec is None:
        return {"kind": "all"}
    out: dict[str, Any] = {"slice": family.index, "kind": family.kind,
                           "min_rows": family.min_rows}
    if spec.by is not None:
        out["by"] = spec.by
    if spec.bins is not None:
        out["bins"] = [_number(b) for b in spec.bins]
    if spec.where is not None:
        out["name"] = spec.name
    return out


def figures(scores: SliceScores, model: int, index: int,
            bounds: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Point estimate and interval of every metric on slice `index` (undefined ones left out)."""
    out = {}
    for metric in METRICS[scores.kind]:
        value = scores.value(model, metric, index)
        if value is None:
            continue
        low, high = bounds[metric]
        entry: dict[str, Any] = {"value": round(value, 6)}
        if np.isfinite(low[index]) and np.isfinite(high[index]):
            entry["interval"] = [round(float(low[index]), 6), round(float(high[index]), 6)]
        out[metric] = entry
    return out


def exact_view(scores: SliceScores, model: int, env: Environment,
               restricted: bool) -> dict[str, Any]:
    """Exact figures, withholding slices of restricted rows below `min_group_size`."""
    min_group = env.privacy.min_group_size
    bounds = {m: b for m in METRICS[scores.kind]
              if (b := scores.interval(model, m)) is not None}
    view: dict[str, Any] = {"bootstrap": _bootstrap(scores),
                            "release": {"policy": "exact", "restricted": restricted}}
    if restricted:
        view["release"]["min_group_size"] = min_group
    view["overall"] = {"rows": int(scores.rows[0]), "metrics": figures(scores, model, 0, bounds)}
    families: list[dict[str, Any]] = []
    for family, code, index in scores.positions()[1:]:
        if code == 0:
            families.append({**slice_spec(env, family), "slices": [], "withheld": 0})
            if family.dropped:
                families[-1]["not_sliced"] = family.dropped
        record = families[-1]
        rows = int(scores.rows[index])
        name = family.names[code]
        if restricted and rows < min_group:
            if family.public[code]:
                record["slices"].append({"name": name, "key": mlflow_key(name),
                                         "status": "withheld"})
            else:
                record["withheld"] += 1
            continue
        entry: dict[str, Any] = {"name": name, "key": mlflow_key(name), "rows": rows,
                                 "status": "scored" if rows >= family.min_rows else "too_small"}
        entry["metrics"] = figures(scores, model, index, bounds)
        record["slices"].append(entry)
    view["slices"] = families
    return view


def _bootstrap(scores: SliceScores) -> dict[str, Any]:
    return {"method": "poisson", "resamples": scores.resamples, "seed": scores.seed,
            "confidence": scores.confidence}


def _number(value: float) -> Any:
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if float(value).is_integer() else value
