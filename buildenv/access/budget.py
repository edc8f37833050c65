"""The privacy budget ledger: how much privacy loss (epsilon) has been spent on each dataset.

`.buildenv/privacy/ledger.jsonl` lives in the data's state directory, next to the audit log, so
every checkout and Pants sandbox that reads the same data spends from the same ledger. One JSON
line per release: time, actor, scope, dataset, environment, locked digest, epsilon, delta,
purpose. A release is written to the ledger (and fsynced) *before* anything is shown, under an
exclusive lock that also covers the check of what is left, so N processes spending at once never
spend more than the budget between them; a refused request spends nothing.

**Scope, and new versions of the data.** Privacy loss accrues to people, not to files. By
default every version (content digest) of a dataset, in every environment that declares it
under the same name, spends from one budget: a new quarterly export of `users` holds mostly the
same people, so it gets no fresh budget. `privacy.budget_per_version` names datasets whose
versions hold different people (a fresh survey each wave): there each locked digest is its own
scope (`name@digest`). The budget that applies is the environment's `privacy.epsilon_budget`,
which `extends` can only lower; what is spent is counted across every environment, so an
environment with a smaller budget sees less left.

A crash while a line is written leaves a torn last line: that release was never recorded, so
nothing was shown; the next writer cuts it off. Any other line that is not a record means the
ledger was damaged: releases stop (BE819) until it is restored, since ignoring it would
understate what was spent.

A sandboxed training cannot reach the state directory: its `spend` asks the build, which
spends for it from this environment's budget (`buildenv.compile.sandbox_services`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from buildenv.core.actor import actor
from buildenv.core.appendlog import AppendLog
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.data.gate import handover
from buildenv.env.spec import Environment

__all__ = ["TOLERANCE", "BudgetExceeded", "Ledger", "scope_of"]

TOLERANCE = 1e-9  # float sums of epsilons: 10 x 0.1 fits a budget of 1.0


def scope_of(env: Environment, dataset: str, digest: str) -> str:
    """The ledger scope a release on `digest` of `dataset` spends from (see the module doc)."""
    return f"{dataset}@{digest}" if dataset in env.privacy.budget_per_version else dataset


class BudgetExceeded(Exception):
    """The request does not fit in what is left."""

    def __init__(self, requested: float, spent: float, budget: float):
        super().__init__(f"{requested} > {budget} - {spent}")
        self.requested, self.spent, self.budget = requested, spent, budget

    @property
    def left(self) -> float:
        return max(0.0, self.budget - self.spent)


class Ledger:
    def __init__(self, state_dir: Path):
        self.folder = state_dir / "privacy"
        self.path = self.folder / "ledger.jsonl"

    # --- reading ------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every record; BE819 when a line other than a torn last one is not a record."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is torn (or empty)
        out = []
        for number, line in enumerate(complete, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("scope"), str) \
                        or not _finite(record.get("epsilon")):
                    raise ValueError(line)
            except ValueError:
                raise DiagnosticError([Diagnostic(
                    "BE819", f"the privacy budget ledger is damaged at line {number}: it is not "
                    "a release record; private releases stop until it is restored",
                    str(self.path), number,
                    hints=("restore the ledger from a backup; `buildenv audit` lists every "
                           "release with its epsilon",))], 1) from None
            out.append(record)
        return out

    def spent(self, scope: str) -> float:
        return math.fsum(r["epsilon"] for r in self.records() if r["scope"] == scope)

    # --- writing ------------------------------------------------------------------------
    def spend(self, *, scope: str, epsilon: float, budget: float, **record: Any) -> dict[str, Any]:
        """Record a release of `epsilon` in `scope` if it fits in `budget`; BudgetExceeded
        otherwise. The check and the append happen under one exclusive lock."""
        if handover.active():
            return _spend_through_build(epsilon, record)
        log = AppendLog(self.path, "the privacy budget ledger")
        with log.locked():
            log.cut_torn_tail()
            spent = self.spent(scope)
            if spent + epsilon > budget + TOLERANCE:
                raise BudgetExceeded(epsilon, spent, budget)
            entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                     "actor": actor(), "scope": scope, "epsilon": epsilon, **record}
            log.append(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        return entry


def _spend_through_build(epsilon: float, record: dict[str, Any]) -> dict[str, Any]:
    """The build spends for a sandboxed training (it decides the scope and budget itself)."""
    reply = handover.ask("spend", epsilon=epsilon, record=record)
    if reply.get("ok") and isinstance(reply.get("entry"), dict):
        return dict(reply["entry"])
    exceeded = reply.get("exceeded")
    if isinstance(exceeded, list) and len(exceeded) == 3:
        raise BudgetExceeded(*(float(v) for v in exceeded))
    raise DiagnosticError([Diagnostic.from_json(d) for d in reply.get("diagnostics") or []] or [
        Diagnostic("BE819", f"the build did not record the release in the privacy budget "
                   f"ledger ({reply.get('error')}); nothing is released")], 1)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0
