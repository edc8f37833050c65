"""Slice figures of restricted evaluation rows, released with differential privacy.

With `privacy.release: dp` nothing exact about a slice leaves the training process. Each slice
family is one histogram over public cells -- (slice, class is positive, prediction correct,
score decile) for a two-class model with probabilities, (slice, prediction correct) for other
classifiers, (slice) alone for regression -- counted by OpenDP's `make_count_by_categories`
(every row in one cell; rows in no slice go to its null category) and released with discrete
Laplace noise (`make_laplace`) calibrated to the rows one person may hold (`privacy.units`,
rows beyond `max_rows` left out first). `privacy.release_epsilon` is split evenly over the
families (basic composition) and spent from the budget of every restricted dataset the
evaluation rows read, in the ledger, before anything is released; the audit log records the
release. Everything shown is computed from the noisy cells (post-processing): rows, accuracy,
and ROC AUC of scores binned in deciles (ties within a decile count half). Their intervals are
the noise's: the 2.5th-97.5th percentiles of the figure over 1,000 seeded re-draws of the
noise at the released scale.

A release is remembered under the data's state directory by the build's cache key
(`privacy/releases/`): an identical rebuild shows the same figures and spends nothing, so the
artifact's bytes repeat. A sandboxed training reaches the ledger and the remembered release
through the build (which knows the key itself). Without budget (or without OpenDP) the figures are withheld (BE516).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from buildenv.access import backend
from buildenv.access.budget import BudgetExceeded, Ledger, scope_of
from buildenv.access.unit import contributions, truncation_for
from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import DiagnosticError
from buildenv.data.gate import handover
from buildenv.data.gate.audit import AuditLog
from buildenv.env.spec import Environment
from buildenv.training.slice_scores import SliceScores
from buildenv.training.slice_view import exact_view, mlflow_key, slice_spec

__all__ = ["private_view", "release_path"]

_DECILES = 10
_DRAWS = 1000


def private_view(scores: SliceScores, outputs: Any, env: Environment, rows: Any,
                 keep: np.ndarray, release: Any) -> tuple[dict[str, Any], list[dict]]:
    """The slice view of restricted rows under `release: dp`, and notes (BE516)."""
    base = exact_view(scores, 0, env, True)  # its overall figures only (public as before)
    layout = _layout(scores, outputs)
    view: dict[str, Any] = {"bootstrap": base["bootstrap"], "overall": base["overall"]}
    stored = _stored(release)
    notes: list[dict] = []
    if len(scores.families) == 1:  # no slices declared: nothing to release, nothing spent
        cells, spent = [], 0.0
    elif stored is not None:
        cells, spent = stored["cells"], stored["epsilon"]
    else:
        try:
            cells, spent = _release(scores, layout, env, rows, keep, release)
        except _Withheld as exc:
            notes.append({"code": "BE516", "message": f"slice figures withheld: {exc}",
                          "path": None, "line": None, "col": None, "severity": "warning",
                          "hints": ["gates still decide on exact figures"],
                          "yaml_path": ["privacy", "release_epsilon"]})
            cells, spent = None, 0.0
    view["release"] = {"policy": "dp", "restricted": True, "epsilon_spent": spent,
                       "mechanism": "OpenDP make_count_by_categories, discrete Laplace",
                       "cells": layout["what"], "interval": "95% of the noise"}
    view["slices"] = _figures(scores, layout, cells, env)
    return view, notes


class _Withheld(Exception):
    pass


def _layout(scores: SliceScores, outputs: Any) -> dict[str, Any]:
    """Each labelled row's cell offset within its slice, and how many cells a slice has."""
    stats = outputs.row_stats()
    correct = stats.sums["correct"].astype(np.int64) if "correct" in stats.sums else None
    if stats.score is not None and stats.positive is not None and correct is not None:
        decile = np.minimum((stats.score * _DECILES).astype(np.int64), _DECILES - 1)
        offset = stats.positive.astype(np.int64) * 2 * _DECILES + correct * _DECILES + decile
        return {"offset": offset, "per_slice": 4 * _DECILES, "kind": "binary",
                "what": "(slice, positive, correct, score decile)"}
    if correct is not None:
        return {"offset": correct, "per_slice": 2, "kind": "classes",
                "what": "(slice, correct)"}
    return {"offset": np.zeros(stats.rows, np.int64), "per_slice": 1, "kind": "rows",
            "what": "(slice)"}


def _release(scores: SliceScores, layout: dict[str, Any], env: Environment, rows: Any,
             keep: np.ndarray, release: Any) -> tuple[list[list[float]], float]:
    """Spend, release, audit and remember; the noisy cells of each family."""

    try:
        dp = backend.opendp("slice figures of restricted evaluation rows")
    except DiagnosticError as exc:
        raise _Withheld(exc.diagnostics[0].message) from None
    project = release.project
    source = env.evaluation.dataset or env.label_dataset() or ""
    d_in = contributions(env, source)
    mask = np.ones(int(keep.sum()), bool)
    truncation = truncation_for(env, source)
    if truncation is not None and rows.attributes is not None:
        key = rows.attributes.filter(pa.array(keep)).select([truncation.key])
        mask = truncation.keep(key.combine_chunks().to_batches()[0]) if key.num_rows else mask
    families = scores.families[1:]
    epsilon = env.privacy.release_epsilon
    share = epsilon / max(len(families), 1) * (1 - 1e-12)
    chains = []
    for family in families:
        size = family.size * layout["per_slice"]
        t = dp.t.make_count_by_categories(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.symmetric_distance(),
            categories=list(range(size)), null_category=True, TOA="i64")
        scale = dp.binary_search_param(lambda s, t=t: t >> dp.m.then_laplace(s), d_in=d_in,
                                       d_out=share)
        chains.append((t >> dp.m.make_laplace(t.output_domain, t.output_metric, scale), scale))
    ledger = Ledger(project.data_state_dir)
    spent_on = []
    for dataset, digest in sorted(rows.digests.items()):
        if not env.restricted(dataset):
            continue
        try:
            entry = ledger.spend(scope=scope_of(env, dataset, digest), epsilon=epsilon,
                                 budget=env.privacy.budget(dataset), dataset=dataset,
                                 environment=env.name, digest=digest, purpose="evaluation")
        except BudgetExceeded as exc:
            raise _Withheld(f"the privacy budget of '{dataset}' has {exc.left:.6g} left, and "
                            f"privacy.release_epsilon is {epsilon:g}") from None
        spent_on.append((dataset, digest, entry))
    cells: list[list[float]] = []
    for family, (chain, scale) in zip(families, chains):
        codes = np.where(family.codes >= 0, family.codes * layout["per_slice"]
                         + layout["offset"], -1)[mask]
        noisy = chain(codes.astype(np.int64).tolist())
        cells.append([int(v) for v in noisy[:-1]] + [float(scale)])
    log = AuditLog(project.data_state_dir)
    for dataset, digest, entry in spent_on:
        log.append(purpose="evaluation", environment=env.name, dataset=dataset, digest=digest,
                   columns=["slices"], rows=None, outcome="released", epsilon=epsilon,
                   delta=0.0, scope=scope_of(env, dataset, digest),
                   ledger_time=entry.get("time"))
    _remember(release, {"cells": cells, "epsilon": epsilon})
    return cells, epsilon


def _figures(scores: SliceScores, layout: dict[str, Any], cells: list | None,
             env: Environment) -> list[dict[str, Any]]:
    out = []
    rng = np.random.default_rng([env.evaluation.seed, 0xD9])
    for k, family in enumerate(scores.families[1:]):
        record: dict[str, Any] = {**slice_spec(env, family), "slices": [], "withheld": 0}
        for code, name in enumerate(family.names):
            entry: dict[str, Any] = {"name": name, "key": mlflow_key(name)}
            if cells is None:
                entry["status"] = "withheld"
            else:
                per = layout["per_slice"]
                found = np.maximum(np.asarray(cells[k][code * per:(code + 1) * per]), 0)
                entry.update(_derived(found, float(cells[k][-1]), layout["kind"], rng))
                entry["status"] = "released" if entry["rows"]["value"] >= family.min_rows \
                    else "too_small"
            record["slices"].append(entry)
        out.append(record)
    return out


def _derived(cells: np.ndarray, scale: float, kind: str, rng: np.random.Generator
             ) -> dict[str, Any]:
    """Rows and metrics from one slice's noisy cells, with the noise's 95% interval."""
    draws = np.maximum(cells[None, :] + _discrete_laplace(rng, scale, (_DRAWS, len(cells))), 0)

    def figures(c: np.ndarray) -> dict[str, np.ndarray]:
        rows = c.sum(axis=-1)
        out = {"rows": rows}
        if kind in ("binary", "classes"):
            shaped = c.reshape(*c.shape[:-1], -1, 2, _DECILES) if kind == "binary" else None
            correct = shaped[..., 1, :].sum(axis=(-1, -2)) if shaped is not None \
                else c[..., 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                out["accuracy"] = np.where(rows > 0, correct / rows, np.nan)
            if shaped is not None:
                pos = shaped[..., 1, :, :].sum(axis=-2)  # positives per decile
                neg = shaped[..., 0, :, :].sum(axis=-2)
                below = np.cumsum(neg, axis=-1) - neg
                pairs = pos.sum(axis=-1) * neg.sum(axis=-1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out["roc_auc"] = np.where(pairs > 0, (pos * (below + neg / 2)).sum(
                        axis=-1) / pairs, np.nan)
        return out

    point, noise = figures(cells.astype(np.float64)), figures(draws)
    result: dict[str, Any] = {}
    for name, value in point.items():
        spread = noise[name][np.isfinite(noise[name])]
        half = float(np.quantile(np.abs(spread - value), 0.95)) if len(spread) and \
            np.isfinite(value) else None
        if name == "rows":
            result["rows"] = {"value": int(value), "accuracy": round(half or 0.0, 1)}
        elif np.isfinite(value):
            result.setdefault("metrics", {})[name] = {
                "value": round(float(value), 6),
                "interval": [round(max(0.0, float(value) - (half or 0.0)), 6),
                             round(min(1.0, float(value) + (half or 0.0)), 6)]}
    return result


def _discrete_laplace(rng: np.random.Generator, scale: float, shape: tuple) -> np.ndarray:
    p = 1.0 - np.exp(-1.0 / scale)
    return (rng.geometric(p, shape) - rng.geometric(p, shape)).astype(np.float64)


def release_path(project: Any, key: str) -> Path:
    """Where the release of the build with cache key `key` is remembered."""
    name = hashlib.sha256(f"slices:{key}".encode()).hexdigest()
    return Path(project.data_state_dir) / "privacy" / "releases" / f"{name}.json"


def _store(release: Any) -> Path | None:
    key = getattr(release, "key", None)
    return release_path(release.project, key) if key else None


def _stored(release: Any) -> dict | None:
    if release is not None and handover.active():
        reply = handover.ask("release")
        data = reply.get("data") if reply.get("ok") else None
        return data if isinstance(data, dict) and "cells" in data else None
    path = _store(release) if release is not None else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) and "cells" in data else None


def _remember(release: Any, data: dict) -> None:
    if handover.active():
        reply = handover.ask("release", data=data)
        if not reply.get("ok"):
            raise OSError(int(reply.get("errno") or 5), f"the build did not remember the "
                          f"release: {reply.get('error')}")
        return
    path = _store(release)
    if path is not None:
        atomic_write_text(path, json.dumps(data, sort_keys=True))
