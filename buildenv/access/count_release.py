"""Counts of rows of a restricted dataset, shown as the privacy policy says.

Figures that describe rows -- how many rows a labeling function votes on, how many conflict --
are counts. For a dataset that is not restricted they are shown as they are. For a restricted
one, `privacy.release` decides:

- `exact`: a count of fewer than `privacy.min_group_size` rows is withheld (shown as None),
  and every figure computed from it with it;
- `dp`: every count is released with differential privacy through OpenDP (discrete Laplace
  noise, `make_laplace` on the count, whose sensitivity is the rows one person may hold,
  `privacy.units`), `privacy.release_epsilon` split evenly over the counts (basic
  composition) and spent once from the dataset's budget in the ledger before anything is shown;
  the audit log records the release. A release is remembered by its key (what was counted, on
  which data), so showing the same figures again spends nothing. Without budget, or without
  OpenDP, the counts are withheld (BE516).

The total number of rows is public where the lock records it, and is then never noised; the
rows of an output user code computed over restricted data, which the lock withholds, are a count
like the others (`compile.label_analysis`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from buildenv.access import backend
from buildenv.access.budget import BudgetExceeded, Ledger, scope_of
from buildenv.access.unit import contributions
from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.env.spec import Environment

__all__ = ["Released", "release_counts"]


@dataclass
class Released:
    """Counts as they may be shown (None: withheld), and how."""

    counts: dict[str, float | None]
    policy: str  # public | exact | dp
    epsilon: float = 0.0
    notes: list[Diagnostic] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "epsilon_spent": self.epsilon,
                "withheld": sorted(k for k, v in self.counts.items() if v is None)}


def release_counts(project: Project, env: Environment, dataset: str, digest: str,
                   counts: dict[str, int], key: str, purpose: str) -> Released:
    """`counts` of rows of `dataset` (version `digest`) as the environment's policy shows them;
    `key` names what is counted (a release is remembered under it)."""
    if not env.restricted(dataset):
        return Released({k: float(v) for k, v in counts.items()}, "public")
    if env.privacy.release == "exact":
        floor = env.privacy.min_group_size
        return Released({k: (float(v) if v >= floor else None) for k, v in counts.items()},
                        "exact")
    store = project.data_state_dir / "privacy" / "releases" / (
        hashlib.sha256(f"counts:{key}".encode()).hexdigest() + ".json")
    try:
        remembered = json.loads(store.read_text())
        if set(remembered["counts"]) == set(counts):
            return Released(remembered["counts"], "dp", float(remembered["epsilon"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    epsilon = env.privacy.release_epsilon
    try:
        noisy = _noisy(env, dataset, counts, epsilon)
    except DiagnosticError as exc:
        return _withheld(counts, exc.diagnostics[0].message)
    try:
        entry = Ledger(project.data_state_dir).spend(
            scope=scope_of(env, dataset, digest), epsilon=epsilon,
            budget=env.privacy.budget(dataset), dataset=dataset, environment=env.name,
            digest=digest, purpose=purpose)
    except BudgetExceeded as exc:
        return _withheld(counts, f"the privacy budget of '{dataset}' has {exc.left:.6g} left, "
                         f"and privacy.release_epsilon is {epsilon:g}")
    AuditLog(project.data_state_dir).append(
        purpose=purpose, environment=env.name, dataset=dataset, digest=digest,
        columns=sorted(counts), rows=None, outcome="released", epsilon=epsilon, delta=0.0,
        scope=scope_of(env, dataset, digest), ledger_time=entry.get("time"))
    released: dict[str, float | None] = {k: float(max(v, 0)) for k, v in noisy.items()}
    atomic_write_text(store, json.dumps({"counts": released, "epsilon": epsilon},
                                        sort_keys=True))
    return Released(released, "dp", epsilon)


def _noisy(env: Environment, dataset: str, counts: dict[str, int], epsilon: float
           ) -> dict[str, int]:
    dp = backend.opendp("figures of restricted rows")
    share = epsilon / max(len(counts), 1) * (1 - 1e-12)
    d_in = contributions(env, dataset)
    domain, metric = dp.atom_domain(T="i64"), dp.absolute_distance(T="i64")
    scale = dp.binary_search_param(lambda s: dp.m.make_laplace(domain, metric, s), d_in=d_in,
                                   d_out=share)
    measurement = dp.m.make_laplace(domain, metric, scale)
    if not math.isfinite(float(measurement.map(d_in))) or measurement.map(d_in) > share:
        raise AssertionError("a count's release spends more than its share")
    return {k: int(measurement(int(v))) for k, v in counts.items()}


def _withheld(counts: dict[str, int], why: str) -> Released:
    return Released({k: None for k in counts}, "dp", 0.0, [Diagnostic(
        "BE516", f"figures withheld: {why}", severity=Severity.WARNING,
        hints=("gates still decide on exact figures",))])
