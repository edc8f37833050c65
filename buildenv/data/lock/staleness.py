"""Staleness: is an environment's lock still what its YAML, data and label sets say?

`check_lock` compares the lock with the resolved environment (cheap first: the environment
digest, then a stat per file through the stat cache) and says what changed and what to run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.data.executor import Executor
from buildenv.data.lock.computed_labels import labels_staleness
from buildenv.data.lock.derived import Pinned, derived_staleness
from buildenv.data.lock.digests import FILE, StatCache, digest_location
from buildenv.data.lock.lockfile import Lock, LockedDataset, lock_path, read_lock, stat_cache
from buildenv.data.lock.locking import Digested, digest_dataset, label_declaration
from buildenv.data.lock.manifest import (
    ManifestError,
    describe_diff,
    resolve_partitions,
)
from buildenv.data.lock.objects import LocalObjects
from buildenv.data.lock.provenance import provenance_problems
from buildenv.data.lock.sources import source_staleness
from buildenv.data.lock.tables import declared_pin
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.source_rules import derived_order
from buildenv.env.spec import Dataset


def check_lock(multiverse: Multiverse, res: Resolved, verify_data: bool = True,
               cache: StatCache | None = None, executor: Executor | None = None
               ) -> tuple[Lock | None, list[Diagnostic]]:
    """The lock if it pins exactly this environment's data, else diagnostics saying what to run."""
    project = multiverse.project
    name = res.name
    lock = read_lock(project, name)
    display = project.rel(lock_path(project, name))
    if lock is None:
        return None, [res.diag("BE050", f"environment '{name}' has no lock ({display})", "name",
                               hints=(f"run `buildenv lock {name}`",))]
    problems = _dataset_pins_stale(res, lock, display)
    problems.extend(_label_pins_stale(res, lock, display))
    if not problems and lock.environment_digest != res.digest:
        # The data pins still hold; only the recorded environment digest is old (columns,
        # serving or monitoring changed). Builds proceed; `lock` refreshes the record.
        problems.append(Diagnostic(
            "BE052", f"lock of '{name}' records an older version of the environment "
            "(its data pins still match)", display, severity=Severity.WARNING,
            hints=(f"run `buildenv lock {name}` to refresh it",)))
    if any(p.is_error for p in problems) or not verify_data:
        return (None if any(p.is_error for p in problems) else lock), problems
    own_cache = cache is None
    cache = cache or stat_cache(project)
    current: dict[str, Pinned] = {}  # each dataset's pin now, for what is derived from it
    derived = derived_order(res.env)
    plain = sorted(n for n in res.env.datasets if n not in derived)
    rebuilt: set[str] = set()  # derived datasets found stale: what reads them is stale too
    for ds_name in plain + derived:
        ds = res.env.datasets[ds_name]
        pinned = lock.datasets[ds_name]
        stale = (derived_staleness(project, res, ds_name, pinned, current, lock.datasets)
                 if ds.source is not None else [])
        if ds.source is not None and not stale:
            stale = _upstream_stale(res, ds_name, ds.source.inputs, rebuilt)
        if stale:
            rebuilt.add(ds_name)
        problems.extend(stale)
        if ds.is_table or ds.dvc is not None:
            algorithm = (pinned.manifest.algorithm if pinned.manifest is not None
                         else pinned.digest.split(":", 1)[0])
            problems.extend(source_staleness(project, res, ds_name, pinned, algorithm, cache,
                                             executor))
            continue
        now, found = _digest_now(project, res, ds_name, pinned, cache, executor, bool(stale))
        problems.extend(found)
        if now is not None and now.manifest is not None and pinned.manifest is not None \
                and pinned.manifest.withheld:  # compared as pinned: by paths and digests
            kept = now.manifest.withhold()
            now = replace(now, value=replace(now.value, digest=kept.digest), manifest=kept)
        if now is None:
            if ds.source is not None:  # not built here: what is derived from it uses the pin
                current[ds_name] = Pinned(pinned.digest, pinned.manifest)
            continue
        current[ds_name] = Pinned(now.value.digest, now.manifest)
        if ds_name in res.env.privacy.synthetic:
            problems.extend(provenance_problems(project, res, ds_name, now.value.digest))
        if now.value.digest != pinned.digest and not stale:
            if ds.source is not None:  # rebuilt as pinned: what is derived from it reads that
                current[ds_name] = Pinned(pinned.digest, pinned.manifest)
            problems.append(_changed(project, res, ds_name, pinned, now))
    problems.extend(_computed_labels_stale(project, res, lock, current, rebuilt))
    problems.extend(_label_bytes_changed(project, res, lock, cache))
    if own_cache:
        cache.save()
    return (None if any(p.is_error for p in problems) else lock), problems


def _changed(project: Project, res: Resolved, ds_name: str, pinned: LockedDataset,
             now: Digested) -> Diagnostic:
    """BE051: a dataset's bytes are not the ones the lock pins: what changed, and what to
    run (`checkout` puts pinned files back but deletes none, so it is the fix only where a
    pinned file was removed or changed). A derived dataset's code and inputs are then as
    pinned: its output was changed outside buildenv (a file deleted or edited under
    .buildenv/), which is BE094 -- not built as pinned in this checkout -- rebuilt from the
    lock like a fresh checkout's."""
    ds = res.env.datasets[ds_name]
    name = res.name
    added: list[str] = []
    gone = True  # a file the lock pins was removed or changed
    if pinned.manifest is not None and now.manifest is not None:
        added, removed, changed = pinned.manifest.diff(now.manifest)
        what = describe_diff(added, removed, changed)
        gone = bool(removed or changed)
    else:
        what = f"{pinned.digest} -> {now.value.digest}"
    if ds.source is not None:
        return res.diag(
            "BE094", f"dataset '{ds_name}' is not built as pinned in this checkout: its output "
            f"changed outside buildenv ({what}), not its code or inputs", "datasets", ds_name,
            "source", hints=(f"run `buildenv lock {name}` (or build): it is rebuilt from its "
                             "locked code and inputs",))
    hints = [f"if the new data is intended, review `buildenv drift {name} --dataset "
             f"{ds_name} --against {ds.uri}` and run `buildenv lock {name}`"]
    if gone and locate(ds.uri, project).local is not None and _kept(project, pinned):
        hints.append(f"if not, `buildenv checkout {name}` restores the locked bytes "
                     "from the object store"
                     + (" (it leaves the added files: remove them)" if added else ""))
    elif added:  # checkout writes pinned files back; it deletes none
        hints.append("if not, remove the added file(s): the lock pins the others")
    return res.diag(
        "BE051", f"dataset '{ds_name}' changed since it was locked: {what} ({ds.uri})",
        "datasets", ds_name, "uri", hints=tuple(hints))


def _layout_changed(res: Resolved, ds_name: str, was: str) -> Diagnostic:
    """BE052 for a derived dataset whose output's place changed: its layout follows its first
    input (partitioned like it, or one file), so a new first input moved it; the uris are
    buildenv's own, not something the user wrote."""
    ds = res.env.datasets[ds_name]
    assert ds.source is not None

    def shape(uri: str) -> str:
        return "one file per input file" if uri.endswith("/") else "one file"

    return res.diag("BE052", f"dataset '{ds_name}' is now laid out like its first input "
                    f"'{ds.source.inputs[0]}' ({shape(ds.uri)}); the lock has {shape(was)}",
                    "datasets", ds_name, "source", "inputs",
                    hints=(f"run `buildenv lock {res.name}`: every file is built again (the "
                           "first input is the one transformed file by file)",))


def _computed_labels_stale(project: Project, res: Resolved, lock: Lock,
                           current: dict[str, Pinned], rebuilt: set[str]) -> list[Diagnostic]:
    """BE875 for each label set computed by functions whose functions or data changed; a
    warning for one whose dataset is a derived dataset found stale (`rebuilt`)."""
    problems = []
    for ls_name, spec in sorted(res.env.labels.items()):
        if spec.source is None:
            continue
        found = labels_staleness(project, res, ls_name, lock.labels[ls_name], current,
                                 lock.datasets)
        if not found and spec.dataset in rebuilt:
            found = [res.diag(
                "BE875", f"label set '{ls_name}' may be stale: its dataset '{spec.dataset}' "
                "is stale", "labels", ls_name, "dataset", severity=Severity.WARNING,
                hints=(f"run `buildenv lock {res.name}`: it rebuilds '{spec.dataset}', then "
                       "applies the functions to the files whose bytes changed",))]
        problems.extend(found)
    return problems


def _upstream_stale(res: Resolved, name: str, inputs: list[str], rebuilt: set[str]
                    ) -> list[Diagnostic]:
    """BE093 for a derived dataset whose own pins still hold but that reads a derived
    dataset found stale: rebuilding that one may change this one's input (the files whose
    bytes change)."""
    upstream = [i for i in inputs if i in rebuilt]
    if not upstream:
        return []
    listed = ", ".join(f"'{i}'" for i in upstream)
    return [res.diag("BE093", f"dataset '{name}' may be stale: its input"
                     f"{'s' * (len(upstream) > 1)} {listed} "
                     f"{'are' if len(upstream) > 1 else 'is'} stale", "datasets", name,
                     "source", "inputs", severity=Severity.WARNING,
                     hints=(f"run `buildenv lock {res.name}`: it rebuilds them in order, each "
                            "file only when its inputs' bytes changed",))]


def _digest_now(project: Project, res: Resolved, ds_name: str, pinned: LockedDataset,
                cache: StatCache, executor: Executor | None, stale: bool
                ) -> tuple[Digested | None, list[Diagnostic]]:
    """A dataset's digest now, or the problems of reading it (a derived dataset that is not
    built here: BE094, unless it is stale anyway)."""
    ds = res.env.datasets[ds_name]
    algorithm = (pinned.manifest.algorithm if pinned.manifest is not None
                 else pinned.digest.split(":", 1)[0])
    try:
        return digest_dataset(project, ds.uri, ds.format, ds.partitions, algorithm,
                              cache, executor, tuple(ds.columns)), []
    except FileNotFoundError:
        if ds.source is not None:
            return None, [] if stale else [res.diag(
                "BE094", f"dataset '{ds_name}' is not built in this checkout ({ds.uri})",
                "datasets", ds_name, "source",
                hints=(f"run `buildenv lock {res.name}` (or build): it is rebuilt from its "
                       "locked inputs and code",))]
        return None, [res.diag("BE053", f"dataset '{ds_name}': '{ds.uri}' not found",
                               "datasets", ds_name, "uri")]
    except ManifestError as exc:
        return None, [res.diag(code, f"dataset '{ds_name}': {text}", "datasets", ds_name,
                               "uri") for code, text in exc.problems]
    except DiagnosticError:
        raise
    except Exception as exc:
        return None, [res.diag("BE053", f"dataset '{ds_name}': cannot read '{ds.uri}': {exc}",
                               "datasets", ds_name, "uri")]


def _dataset_pins_stale(res: Resolved, lock: Lock, display: str) -> list[Diagnostic]:
    """BE052: a dataset the lock does not pin as it is declared now."""
    name = res.name
    problems: list[Diagnostic] = []
    for ds_name, ds in res.env.datasets.items():
        pinned = lock.datasets.get(ds_name)
        partitions = tuple(pinned.manifest.partitions) if pinned and pinned.manifest else ()
        if pinned is not None and (pinned.derived is None) != (ds.source is None):
            what = "is derived now" if ds.source is not None else "is no longer derived"
            problems.append(res.diag("BE052", f"dataset '{ds_name}' {what}", "datasets",
                                     ds_name, hints=(f"run `buildenv lock {name}`",)))
            continue
        if pinned is not None and ds.source is not None and \
                pinned.uri.endswith("/") != ds.uri.endswith("/"):
            problems.append(_layout_changed(res, ds_name, pinned.uri))
            continue
        wanted = partitions
        if ds.partitioned and pinned is not None and pinned.manifest is not None:
            try:  # inferred from the pinned paths: a column declared since can change them
                wanted = resolve_partitions(ds.partitions, ds.columns,
                                            [f.path for f in pinned.manifest.files])
            except ManifestError as exc:
                problems.extend(res.diag(code, f"dataset '{ds_name}': {text}", "datasets",
                                         ds_name, "uri") for code, text in exc.problems)
                continue
        if (pinned is None or pinned.uri != ds.uri or pinned.format != ds.format
                or (ds.partitioned and partitions != wanted)):
            what = ("is not in the lock" if pinned is None else
                    f"uri changed: lock has '{pinned.uri}', environment has '{ds.uri}'"
                    if pinned.uri != ds.uri or pinned.format != ds.format else
                    f"partitions changed: lock has {list(partitions)}, environment has "
                    f"{list(wanted)}")
            problems.append(res.diag("BE052", f"dataset '{ds_name}' {what}", "datasets",
                                     ds_name, "uri", hints=(f"run `buildenv lock {name}`",)))
        elif (pinned.table is not None) != ds.is_table or (pinned.dvc is not None) != (
                ds.dvc is not None) or _pin_changed(ds, pinned):
            problems.append(res.diag("BE052", f"dataset '{ds_name}': its pin changed since it "
                                     "was locked (version, as_of, ref, snapshot, catalog or "
                                     "dvc)", "datasets", ds_name,
                                     hints=(f"run `buildenv lock {name}`",)))
    for ds_name in sorted(set(lock.datasets) - set(res.env.datasets)):
        problems.append(Diagnostic("BE052", f"lock pins dataset '{ds_name}', which environment "
                                   f"'{name}' no longer declares", display,
                                   hints=(f"run `buildenv lock {name}`",)))
    return problems


def _label_pins_stale(res: Resolved, lock: Lock, display: str) -> list[Diagnostic]:
    """BE057: a label set the lock does not pin as it is declared now."""
    name = res.name
    problems = []
    for ls_name, spec in res.env.labels.items():
        pinned = lock.labels.get(ls_name)
        mappings = {e.mapping for e in spec.reuse if e.mapping}
        if pinned is None:
            what = "is not in the lock"
        elif (pinned.source is None) != (spec.source is None):
            what = ("is computed by labeling functions now" if spec.source is not None else
                    "is no longer computed by labeling functions")
        elif pinned.uri != spec.uri or pinned.format != spec.format:
            what = f"uri changed: lock has '{pinned.uri}', environment has '{spec.uri}'"
        elif set(pinned.mappings) != mappings:
            what = "names other mapping files than the lock pins"
        elif pinned.declaration != label_declaration(spec):
            what = ("changed since it was locked (dataset, key, field, taxonomy, UI version, "
                    "reuse or exposure)")
        else:
            continue
        problems.append(res.diag("BE057", f"label set '{ls_name}' {what}", "labels", ls_name,
                                 hints=(f"run `buildenv lock {name}`",)))
    for ls_name in sorted(set(lock.labels) - set(res.env.labels)):
        problems.append(Diagnostic("BE057", f"lock pins label set '{ls_name}', which "
                                   f"environment '{name}' no longer declares", display,
                                   hints=(f"run `buildenv lock {name}`",)))
    return problems


def _label_bytes_changed(project: Project, res: Resolved, lock: Lock,
                         cache: StatCache) -> list[Diagnostic]:
    """BE058: an export or mapping whose bytes are not the ones the lock pins."""
    problems = []
    for ls_name, spec in sorted(res.env.labels.items()):
        pinned = lock.labels[ls_name]
        files: list[tuple[str, str, tuple[Any, ...]]] = [
            (spec.uri, pinned.digest, ("labels", ls_name, "uri"))]
        files += [(e.mapping, pinned.mappings[e.mapping], ("labels", ls_name, "reuse", i,
                                                          "mapping"))
                  for i, e in enumerate(spec.reuse) if e.mapping]
        for uri, digest, place in files:
            try:
                now = digest_location(locate(uri, project), FILE, digest.split(":", 1)[0],
                                      cache)
            except FileNotFoundError:
                if spec.source is not None:
                    problems.append(res.diag(
                        "BE094", f"label set '{ls_name}' is not computed in this checkout "
                        f"({uri})", "labels", ls_name, "source",
                        hints=(f"run `buildenv lock {res.name}` (or build): it is computed "
                               "from its locked functions and data",)))
                    continue
                problems.append(res.diag("BE853", f"label set '{ls_name}': '{uri}' not found",
                                         *place))
                continue
            except Exception as exc:
                problems.append(res.diag("BE853", f"label set '{ls_name}': cannot read "
                                         f"'{uri}': {exc}", *place))
                continue
            if now.digest != digest:
                problems.append(res.diag(
                    "BE058", f"label set '{ls_name}': '{uri}' changed since it was locked: "
                    f"{digest} -> {now.digest}", *place,
                    hints=(f"if the new annotations are intended, review `buildenv labels "
                           f"{res.name}` and run `buildenv lock {res.name}`",)))
    return problems


def lock_state(multiverse: Multiverse, res: Resolved) -> str:
    """One word for `buildenv envs`: locked / stale / changed / unbuilt / missing / invalid."""
    try:
        _, problems = check_lock(multiverse, res)
    except DiagnosticError:
        return "invalid"
    codes = {p.code for p in problems if p.severity is Severity.ERROR}
    if not codes:
        return "locked"
    if "BE050" in codes:
        return "missing"
    if codes & {"BE052", "BE057", "BE092", "BE093", "BE875"}:
        return "stale"
    if codes & {"BE051", "BE058"}:
        return "changed"
    if "BE094" in codes:
        return "unbuilt"
    return "unreadable"


def _pin_changed(ds: Dataset, pinned: LockedDataset) -> bool:
    """Whether a table's or DVC pin in the declaration differs from the one locked."""
    if ds.is_table and pinned.table is not None:
        return pinned.table.get("pin") != declared_pin(ds)
    if ds.dvc is not None and pinned.dvc is not None:
        return pinned.dvc.get("file") != ds.dvc
    return False


def _kept(project: Project, pinned: LockedDataset) -> bool:
    """Whether the object store holds every file a lock entry pins."""
    store = LocalObjects.of(project)
    if pinned.manifest is not None:
        return all(store.has(f.digest) for f in pinned.manifest.files)
    return store.has(pinned.digest)
