"""Locking environments whole: datasets and label sets (`lock_environments`, which every
caller uses), and pinning label sets (`lock_label_sets`, the `LabelLocker` the lock owns).

Each export is read through the gate unpinned, so the digest locked is the digest of exactly
the bytes that were parsed and counted (examples, annotations, annotators); its taxonomy, UI
version and the digests of its mapping files are recorded with it. A label set whose
declaration, export and mappings are unchanged since the previous lock (the stat cache says
so) keeps its entry without being parsed again. When a label set is (re)locked, the exposure
rule is checked across the multiverse too.
"""

from __future__ import annotations

import time

from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.executor import Executor
from buildenv.data.lock.digests import FILE, ContentDigest, StatCache
from buildenv.data.lock.lockfile import Lock, LockedLabels
from buildenv.data.lock.locking import SourceBuilder, label_declaration, lock_environments_with
from buildenv.data.storage import Stat, locate
from buildenv.data.store.keeping import keep_lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import LabelSet

__all__ = ["lock_environments", "lock_label_sets"]

# Deferred imports (buildenv): the data gate, `labels.checks` and `labels.labelset` bring
# pyarrow.compute and the label formats, a fifth of `buildenv lock`'s start-up; only an
# environment with label sets to parse needs them.


def _unchanged(project: Project, spec: LabelSet, previous: LockedLabels | None,
               cache: StatCache) -> bool:
    if previous is None or previous.uri != spec.uri or previous.format != spec.format:
        return False
    if previous.declaration != label_declaration(spec):
        return False
    mappings = {e.mapping for e in spec.reuse if e.mapping}
    if set(previous.mappings) != mappings:
        return False
    files = [(spec.uri, previous.digest)] + sorted(previous.mappings.items())
    for uri, digest in files:
        location = locate(uri, project)
        try:
            hit = cache.get(location.key, location.stat(), digest.split(":", 1)[0], FILE)
        except OSError:
            return False
        if hit is None or hit.digest != digest:
            return False
    return True


def _remember(project: Project, uri: str, digest: str, size: int, stat_before: Stat,
              started: int, cache: StatCache) -> None:
    """Put a digest the gate computed into the stat cache (no second hashing pass), if the
    file did not change while it was read."""
    location = locate(uri, project)
    try:
        if location.stat() != stat_before:
            return
    except OSError:
        return
    cache.put(location.key, stat_before, digest.split(":", 1)[0], FILE,
              ContentDigest(digest, size, 0), started)


def lock_environments(multiverse: Multiverse, names: list[str], algorithm: str = "sha256",
                      executor: Executor | None = None, builder: SourceBuilder | None = None
                      ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment: its datasets and its label sets. Every lock goes through here
    (`buildenv lock` and `retrain` through `compile.locking`, which passes the `builder` of
    what code makes; `synth`): the data room's locking with this room's `lock_label_sets` and
    the store's `keep_lock` (the pinned bytes kept) plugged into the interfaces the lock owns."""
    return lock_environments_with(lock_label_sets, multiverse, names, algorithm, executor,
                                  keeper=keep_lock, builder=builder)


def lock_label_sets(multiverse: Multiverse, res: Resolved, previous: Lock | None, algorithm: str,
                    cache: StatCache) -> tuple[dict[str, LockedLabels], list[Diagnostic]]:
    """Pin the label sets of `res` (a `LabelLocker`): each export's digest, counts, taxonomy,
    UI version and mapping digests; an unchanged set's entry is taken from `previous`."""
    from buildenv.data.gate.gate import Gate
    from buildenv.labels.checks import exposure_check
    from buildenv.labels.labelset import LabelError, LabelSets

    project = multiverse.project
    gate = Gate(project, res.env, "lock", where=res)
    sets = LabelSets(gate, None, res)
    entries: dict[str, LockedLabels] = {}
    problems: list[Diagnostic] = []
    parsed = False
    for name, spec in res.env.labels.items():
        if spec.source is not None:  # computed by labeling functions: the builder pins it
            continue
        before = previous.labels.get(name) if previous is not None else None
        if before is not None and before.digest.startswith(f"{algorithm}:") and \
                _unchanged(project, spec, before, cache):
            entries[name] = before
            continue
        stats = {}
        started = time.time_ns()
        try:
            for uri in [spec.uri] + [e.mapping for e in spec.reuse if e.mapping]:
                try:
                    stats[uri] = locate(uri, project).stat()
                except OSError:
                    pass
            found = sets.file(name)
            for i, _ in enumerate(spec.reuse):
                sets.decisions(name, i)
        except LabelError as exc:
            problems.extend(exc.diagnostics)
            continue
        parsed = True
        ann = found.annotations
        mappings = {e.mapping: sets.mapping_digests[e.mapping] for e in spec.reuse
                    if e.mapping}
        entries[name] = LockedLabels(
            spec.uri, spec.format, found.digest, found.size, ann.examples, len(ann),
            ann.annotator_count, {"name": spec.taxonomy.name, "version": spec.taxonomy.version},
            spec.ui_version, label_declaration(spec), mappings)
        for uri, digest in [(spec.uri, found.digest), *mappings.items()]:
            if uri in stats:
                _remember(project, uri, digest, found.size if uri == spec.uri else 0,
                          stats[uri], started, cache)
    if parsed and not problems:
        all_resolved, _ = multiverse.resolve_all()
        try:
            found_problems = exposure_check(project, res, sets, all_resolved, "lock")
        except LabelError as exc:
            found_problems = exc.diagnostics
        problems.extend(found_problems)
    return entries, problems
