"""What every private release checks before it reads, and records before it shows anything.

`buildenv stats` on a restricted dataset and `buildenv synth` share one order of events:

1. check the request: a dataset the environment declares, a finite epsilon > 0, a declared
   budget, enough of it left (nothing has been read yet: a refused request costs nothing);
2. read the locked version through the data gate (verified against the lock, audited);
3. spend: append the release to the budget ledger under its lock, re-checking what is left
   (another process may have spent meanwhile) -- refused here, nothing is released;
4. release: OpenDP adds the noise, and the audit log gets a record of the release (epsilon,
   delta, the figures' columns) before anything is printed or written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from buildenv.access.budget import BudgetExceeded, Ledger, scope_of
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.data.lock.lockfile import LockedDataset, lock_path, read_lock
from buildenv.env.resolve import Resolved

__all__ = ["Request", "audit_release", "check_epsilon", "locked_version", "request",
           "require_dataset"]


def require_dataset(res: Resolved, dataset: str) -> None:
    if dataset not in res.env.datasets:
        hint = did_you_mean(dataset, res.env.datasets)
        raise DiagnosticError([Diagnostic(
            "BE009", f"unknown dataset '{dataset}' in environment {res.name}",
            hints=(hint,) if hint else ("datasets: " + ", ".join(sorted(res.env.datasets)),))],
            2)


def check_epsilon(epsilon: float) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise DiagnosticError([Diagnostic(
            "BE813", f"--epsilon must be a finite number greater than 0 (got {epsilon:g})",
            hints=("epsilon is the privacy loss this call may spend: smaller is more private "
                   "and noisier, e.g. --epsilon 0.5",))], 2)


def locked_version(project: Project, res: Resolved, dataset: str) -> LockedDataset:
    """The version of `dataset` the environment's lock pins (private releases are always of a
    locked version: the ledger and the audit log name it)."""
    lock = read_lock(project, res.name)
    display = project.rel(lock_path(project, res.name))
    if lock is None:
        raise DiagnosticError([Diagnostic(
            "BE050", f"environment '{res.name}' has no lock ({display}): private releases are "
            "made of a locked version of the data", hints=(f"run `buildenv lock {res.name}`",))],
            2)
    pinned = lock.datasets.get(dataset)
    declared = res.env.datasets[dataset]
    if pinned is None or pinned.uri != declared.uri or pinned.format != declared.format:
        raise DiagnosticError([Diagnostic(
            "BE052", f"the lock of '{res.name}' does not pin dataset '{dataset}' as the "
            f"environment declares it ({display})",
            hints=(f"run `buildenv lock {res.name}`",))], 2)
    return pinned


@dataclass
class Request:
    """A private release being prepared: where it spends, how much, from what."""

    project: Project
    res: Resolved
    dataset: str
    epsilon: float
    purpose: str
    pinned: LockedDataset
    ledger: Ledger

    @property
    def budget(self) -> float:
        return self.res.env.privacy.budget(self.dataset)

    @property
    def scope(self) -> str:
        return scope_of(self.res.env, self.dataset, self.pinned.digest)

    def spend(self, delta: float = 0.0, **details: Any) -> dict[str, Any]:
        """Step 3: record the release in the ledger, or refuse (BE811) with nothing spent."""
        try:
            return self.ledger.spend(
                scope=self.scope, epsilon=self.epsilon, budget=self.budget, delta=delta,
                dataset=self.dataset, environment=self.res.name, digest=self.pinned.digest,
                purpose=self.purpose, **details)
        except BudgetExceeded as exc:
            raise self._exhausted(exc.spent) from None

    def _exhausted(self, spent: float) -> DiagnosticError:
        left = max(0.0, self.budget - spent)
        hints = [f"ask for --epsilon {left:.6g} or less" if left > 1e-12 else
                 f"the budget of '{self.dataset}' is spent: no more private releases of it"]
        if self.dataset in self.res.env.privacy.budget_per_version:
            hints.append("this version's budget is spent; a newly locked version gets its own")
        else:
            hints.append("every version of the dataset shares this budget (see "
                         "privacy.budget_per_version in docs/privacy.md)")
        return DiagnosticError([self.res.diag(
            "BE811", f"privacy budget of dataset '{self.dataset}' exceeded: this call would "
            f"spend epsilon {self.epsilon:g}; {spent:.6g} of {self.budget:g} is spent, "
            f"{left:.6g} is left (nothing was released, nothing was spent)", "privacy",
            "epsilon_budget", hints=tuple(hints))], 1)


def request(project: Project, res: Resolved, dataset: str, epsilon: float,
            purpose: str) -> Request:
    """Step 1: every check that needs no data. Raises the diagnostic of the first failure."""
    require_dataset(res, dataset)
    check_epsilon(epsilon)
    pinned = locked_version(project, res, dataset)
    req = Request(project, res, dataset, float(epsilon), purpose, pinned,
                  Ledger(project.data_state_dir))
    if req.budget <= 0:
        raise DiagnosticError([res.diag(
            "BE812", f"environment {res.name} declares no privacy budget for dataset "
            f"'{dataset}', so nothing about it can be released", "privacy",
            hints=("declare one: `privacy: {epsilon_budget: 3.0}` (each restricted dataset) "
                   "or `epsilon_budget: {" + dataset + ": 3.0}`; see docs/privacy.md",))], 2)
    spent = req.ledger.spent(req.scope)
    if spent + req.epsilon > req.budget + 1e-9:
        raise req._exhausted(spent)
    return req


def audit_release(req: Request, columns: list[str], delta: float, entry: dict[str, Any],
                  **details: Any) -> None:
    """Step 4: the release in the audit log (before anything is shown)."""
    AuditLog(req.project.data_state_dir).append(
        purpose=req.purpose, environment=req.res.name, dataset=req.dataset,
        digest=req.pinned.digest, columns=columns, rows=None, outcome="released",
        epsilon=req.epsilon, delta=delta, scope=req.scope, ledger_time=entry.get("time"),
        **details)
