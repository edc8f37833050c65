"""Locking with sources made by code, and making them where a lock already pins them.

`lock_environments` is what commands that may run user code lock with (`buildenv lock`,
`retrain`): the labels room's locking (datasets, annotated label sets) with `CodeSources`, the
lock's `SourceBuilder`, building derived datasets (`derive`) and computed label sets
(`label_functions`).

`checked_lock` is `check_lock` for commands that read the data (build, validate, labels,
tasks): when the only problem is that derived datasets or computed label sets are not built
in this checkout (a fresh clone, CI, a Pants sandbox's data root), it builds them from the
inputs and code the lock pins -- cached outputs first -- checks that they come out as the lock
pins them (BE094 if not: the code is not deterministic), and checks the lock again.
"""

from __future__ import annotations

from buildenv.core.diagnostics import Diagnostic
from buildenv.data.executor import Executor
from buildenv.data.lock.derived import Pinned
from buildenv.data.lock.digests import StatCache
from buildenv.data.lock.lockfile import Lock, LockedDataset, LockedLabels, read_lock
from buildenv.data.lock.staleness import check_lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.labels.locking import lock_environments as lock_without_code

__all__ = ["CodeSources", "checked_lock", "lock_environments"]

# Deferred imports (buildenv): `compile.derive` and `compile.label_functions` bring the
# training room, the sandbox and pandas (half a second of `buildenv lock`'s start-up), and only
# an environment with derived datasets or computed label sets needs them.


class CodeSources:
    """The lock's `SourceBuilder`: derived datasets and computed label sets, built here."""

    def derived(self, multiverse: Multiverse, res: Resolved, pins: dict[str, Pinned],
                cache: StatCache) -> tuple[dict[str, LockedDataset], list[Diagnostic]]:
        from buildenv.compile.derive import build_derived

        built = build_derived(multiverse.project, res, pins)
        return built.entries, built.problems

    def labels(self, multiverse: Multiverse, res: Resolved, datasets: dict[str, LockedDataset],
               labels: dict[str, LockedLabels], cache: StatCache
               ) -> tuple[dict[str, LockedLabels], list[Diagnostic]]:
        from buildenv.compile.label_functions import build_labels

        built = build_labels(multiverse.project, res, datasets, labels)
        return built.entries, built.problems


def lock_environments(multiverse: Multiverse, names: list[str], algorithm: str = "sha256",
                      executor: Executor | None = None
                      ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment, building what code makes (`labels.locking.lock_environments`
    with `CodeSources`)."""
    return lock_without_code(multiverse, names, algorithm, executor, builder=CodeSources())


def checked_lock(multiverse: Multiverse, res: Resolved, executor: Executor | None = None
                 ) -> tuple[Lock | None, list[Diagnostic]]:
    """`check_lock`, building what the lock pins but this checkout lacks (see the module)."""
    lock, problems = check_lock(multiverse, res, executor=executor)
    errors = [p for p in problems if p.is_error]
    if not errors or any(p.code != "BE094" for p in errors):
        return lock, problems
    pinned = read_lock(multiverse.project, res.name)
    assert pinned is not None
    made = make_pinned(multiverse, res, pinned)
    if any(p.is_error for p in made):
        return None, [p for p in problems if p.code != "BE094"] + made
    lock, again = check_lock(multiverse, res, executor=executor)
    return lock, again + [p for p in made if not p.is_error]


def make_pinned(multiverse: Multiverse, res: Resolved, lock: Lock) -> list[Diagnostic]:
    """Build the derived datasets and computed label sets `lock` pins from the inputs and code
    it pins; BE094 for one that does not come out as pinned."""
    from buildenv.compile.derive import build_derived
    from buildenv.compile.label_functions import build_labels, save_labels

    project = multiverse.project
    pins = {n: Pinned(d.digest, d.manifest) for n, d in lock.datasets.items()
            if res.env.datasets.get(n) is not None and res.env.datasets[n].source is None}
    built = build_derived(project, res, pins)
    problems = [p for p in built.problems if p.is_error]
    for name, entry in built.entries.items():
        if entry.digest != lock.datasets[name].digest:
            problems.append(_unreproduced(res, "datasets", name, lock.datasets[name].digest,
                                          entry.digest))
    if problems:
        return problems
    annotated = {n: e for n, e in lock.labels.items() if e.source is None}
    labels = build_labels(project, res, lock.datasets, annotated, write=False)
    problems = [p for p in labels.problems if p.is_error]
    for name, computed in labels.entries.items():
        if computed.digest != lock.labels[name].digest:
            problems.append(_unreproduced(res, "labels", name, lock.labels[name].digest,
                                          computed.digest))
    if not problems:
        save_labels(project, res, labels)
    return problems


def _unreproduced(res: Resolved, section: str, name: str, pinned: str, made: str
                  ) -> Diagnostic:
    what = "dataset" if section == "datasets" else "label set"
    return res.diag("BE094", f"{what} '{name}' comes out as {made}, not as the lock pins it "
                    f"({pinned}): its code does not give the same output for the same inputs",
                    section, name, "source",
                    hints=("make the code deterministic (no clock, no unseeded randomness, a "
                           f"stable order), then run `buildenv lock {res.name}`",))
