"""Privacy only tightens along `extends` (docs/privacy.md): what a child may change in its
parent's policy, and the one way a dataset may stop being restricted (a synthetic stand-in).
"""

from __future__ import annotations

from typing import Any, Protocol

from buildenv.core.diagnostics import Diagnostic
from buildenv.env.spec import Environment

__all__ = ["privacy_problems"]


class Resolved(Protocol):
    """What these rules need of a resolved environment (`env.resolve.Resolved`, which calls
    them while it resolves: a protocol keeps the two modules out of a circle)."""

    env: Environment

    @property
    def name(self) -> str: ...

    def diag(self, code: str, message: str, *path: Any, hints: tuple[str, ...] = (),
             severity: Any = None) -> Diagnostic: ...


def privacy_problems(child: Resolved, parent: Resolved) -> list[Diagnostic]:
    """A child may tighten its parent's privacy, never loosen it (SPEC §2): every dataset the
    parent restricts stays restricted (unless the child replaced it by a synthetic stand-in
    with provenance), `min_group_size` does not shrink, budgets do not grow, the peek policy
    names no new actor, no annotator joins those who may be sent restricted examples, a
    person stays the unit a private release protects, and a required
    sandbox stays required."""
    problems = []
    own, inherited = child.env.privacy, parent.env.privacy
    for name in inherited.restricted:
        if name in child.env.datasets and name not in own.restricted:
            if _synthetic_stand_in(child, parent, name):
                continue
            problems.append(child.diag(
                "BE019", f"privacy.restricted: dataset '{name}' is restricted in "
                f"{parent.name} and must stay restricted in {child.name} (an environment "
                "may tighten its parent's privacy, never loosen it)", "privacy", "restricted",
                hints=(f"add '{name}' back to privacy.restricted",
                       f"for data without people in it, generate a synthetic stand-in: "
                       f"`buildenv synth {parent.name} --dataset {name} --rows N`")))
    if own.min_group_size < inherited.min_group_size:
        problems.append(child.diag(
            "BE019", f"privacy.min_group_size {own.min_group_size} is smaller than "
            f"{inherited.min_group_size} in {parent.name}: privacy may be tightened, not "
            "loosened", "privacy", "min_group_size",
            hints=(f"use {inherited.min_group_size} or more",)))
    for name in sorted(set(own.restricted) & set(inherited.restricted)):
        mine, theirs = own.budget(name), inherited.budget(name)
        if mine > theirs:
            where = ("epsilon_budget", name) if isinstance(own.epsilon_budget, dict) \
                and name in own.epsilon_budget else ("epsilon_budget",)
            problems.append(child.diag(
                "BE019", f"privacy.epsilon_budget: {mine:g} for dataset '{name}' is more than "
                f"{theirs:g} in {parent.name}: a budget may be lowered, not raised", "privacy",
                *where, hints=(f"use {theirs:g} or less",)))
    fresh = sorted(set(own.budget_per_version) - set(inherited.budget_per_version))
    if fresh:
        problems.append(child.diag(
            "BE019", f"privacy.budget_per_version: {', '.join(fresh)} share one budget over "
            f"every version in {parent.name}; a child may not give each version a fresh one",
            "privacy", "budget_per_version",
            hints=(f"remove {', '.join(fresh)} from privacy.budget_per_version",)))
    added = sorted(set(own.peek.actors) - set(inherited.peek.actors))
    if added:
        problems.append(child.diag(
            "BE019", f"privacy.peek.actors: {', '.join(added)} may not peek in {parent.name}; "
            "a child may shrink the list of actors who see real rows, never widen it",
            "privacy", "peek", "actors",
            hints=("ask for the actor to be added where the parent's policy is written",)))
    widened = sorted(set(own.annotators) - set(inherited.annotators))
    if inherited.restricted and widened:
        problems.append(child.diag(
            "BE019", f"privacy.annotators: {', '.join(widened)} may not be sent examples of "
            f"{parent.name}'s restricted data; a child may shrink the list of annotators who "
            "see them, never widen it", "privacy", "annotators",
            hints=("ask for the annotator to be added where the parent's policy is written",)))
    if inherited.restricted and inherited.sandbox == "required" and own.sandbox != "required":
        problems.append(child.diag(
            "BE019", f"privacy.sandbox: trainings on {parent.name}'s restricted data must run "
            "sandboxed; a child may not make the sandbox optional", "privacy", "sandbox",
            hints=("remove `sandbox: optional`",)))
    if inherited.release == "dp" and own.release != "dp":
        problems.append(child.diag(
            "BE019", f"privacy.release: {parent.name} releases evaluation figures of restricted "
            "rows with differential privacy; a child may not show them exactly", "privacy",
            "release", hints=("keep `release: dp`",)))
    if own.release_epsilon > inherited.release_epsilon:
        problems.append(child.diag(
            "BE019", f"privacy.release_epsilon {own.release_epsilon:g} is more than "
            f"{inherited.release_epsilon:g} in {parent.name}: it may be lowered, not raised",
            "privacy", "release_epsilon", hints=(f"use {inherited.release_epsilon:g} or less",)))
    for name, unit in inherited.units.items():
        mine_unit = own.units.get(name)
        if name in child.env.datasets and (mine_unit is None or mine_unit.key != unit.key):
            problems.append(child.diag(
                "BE019", f"privacy.units.{name}: a person is identified by '{unit.key}' in "
                f"{parent.name}; the child must keep that unit (otherwise a release would "
                "protect a row, not a person)", "privacy", "units",
                hints=(f"keep `units: {{{name}: {{key: {unit.key}, max_rows: ...}}}}`",)))
    return problems


def _synthetic_stand_in(child: Resolved, parent: Resolved, name: str) -> bool:
    """Whether the child may un-restrict `name`: it records the provenance of a synthetic file
    (written by `buildenv synth`) that the dataset points at, and that file is not the
    parent's data. `buildenv lock` and every build check the file's digest and its embedded
    provenance (`buildenv.data.lock.provenance`)."""
    provenance = child.env.privacy.synthetic.get(name)
    if provenance is None:
        return False
    uri = child.env.datasets[name].uri
    real = parent.env.datasets.get(name)
    return provenance.uri == uri and (real is None or real.uri != uri) \
        and provenance.source.digest != provenance.digest
