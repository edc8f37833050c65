"""`buildenv tasks`: Label Studio import files for a label set's UI version, one per annotator,
routed so that nobody is sent an example they labeled under another UI version.

The examples are chosen from the label set as the lock pins it (`--select`): `unlabeled` (rows
of the dataset the set gives no label), `relabel` (reused examples a taxonomy split left
ambiguous), `disagreement` (the set's own annotators chose different classes) or `conflict`
(labeling functions over the same examples vote for different classes). Who may not see an
example comes from every label set of the multiverse (`labels.checks.exposure_sources`, the
same sources the double-exposure check reads), so the annotations returned pass that check by
construction. Restricted datasets: every annotator must be listed in `privacy.annotators`, and
the export is recorded in the audit log. Files appear all at once or not at all.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.compile.label_functions import label_matrix
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.core.tempdirs import owned_temp_dir, scratch_dir
from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.gate import Gate
from buildenv.data.keys import key_text
from buildenv.data.lock.lockfile import Lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.labels.checks import exposure_sources
from buildenv.labels.functions import parse_functions
from buildenv.labels.labelset import LabelError, LabelSets
from buildenv.labels.tasks import assign, import_files

__all__ = ["SELECTIONS", "TaskExport", "export_tasks"]

SELECTIONS = ("unlabeled", "relabel", "disagreement", "conflict")
SHOWN = 5


@dataclass
class TaskExport:
    label_set: str
    select: str
    examples: int
    per_annotator: dict[str, int] = field(default_factory=dict)
    out: str = ""


def export_tasks(multiverse: Multiverse, res: Resolved, lock: Lock, name: str, out: Path,
                 select: str, overlap: int, annotators: list[str], seed: int) -> TaskExport:
    """Choose, assign and write; DiagnosticError (exit 2 for a bad request, 1 when examples
    cannot be covered) with nothing written otherwise."""
    project = multiverse.project
    spec = res.env.labels.get(name)
    _request_problems(res, name, out, select, overlap, annotators, seed)
    assert spec is not None
    restricted = res.env.restricted(spec.dataset)
    pins = {n: d.digest for n, d in lock.datasets.items()}
    gate = Gate(project, res.env, "tasks", pins=pins, manifests=lock.manifests(), where=res)
    sets = LabelSets(gate, lock.label_pins(), res)
    try:
        with gate.open(spec.dataset) as read:
            columns = list(res.env.datasets[spec.dataset].columns)
            table = read.table(columns)
        resolution = sets.resolve(name)
        chosen = _select(project, res, lock, sets, table, name, select, resolution)
        all_resolved = multiverse.resolve_all()[0]
        sources, _ = exposure_sources(project, res, sets, all_resolved, "tasks")
    except LabelError as exc:
        raise DiagnosticError(exc.diagnostics, 1) from None
    seen = _seen(sources, spec.dataset, spec.ui_version, name)
    result = assign(chosen, annotators, overlap, seen, seed)
    if len(result.uncovered):
        raise DiagnosticError([_uncovered(res, name, result.uncovered, result.eligible,
                                          overlap, restricted)], 1)
    rows = _first_rows(table, spec.key)
    # where each chosen example's first row is, looked up once for every annotator
    first = pc.index_in(chosen, value_set=rows.column("__key")).to_numpy(zero_copy_only=False)
    picks = {a: first[at] for a, at in result.positions.items()}
    metas = {a: {"label_set": name, "ui_version": spec.ui_version, "annotator": a,
                 "taxonomy": f"{spec.taxonomy.name} v{spec.taxonomy.version}"} for a in picks}
    texts = import_files(spec.key, rows.drop_columns(["__key"]), picks, metas)
    files = {f"{a}.json": texts[a] for a in picks}
    if restricted:
        AuditLog(project.data_state_dir).append(
            purpose="tasks", environment=res.name, dataset=spec.dataset,
            digest=lock.datasets[spec.dataset].digest, columns=columns, rows=len(chosen),
            label_set=name, annotators=sorted(annotators), out=str(out))
    _publish(project, out, files)
    return TaskExport(name, select, len(chosen),
                      {a: len(k) for a, k in result.tasks.items()}, str(out))


_NAME_MAX = 255  # bytes in a file name on common file systems


def _request_problems(res: Resolved, name: str, out: Path, select: str, overlap: int,
                      annotators: list[str], seed: int) -> None:
    def bad(message: str, hint: str) -> DiagnosticError:
        return DiagnosticError([Diagnostic("BE868", message, hints=(hint,))], 2)

    if name not in res.env.labels:
        raise bad(f"environment {res.name} declares no label set '{name}'",
                  f"one of: {', '.join(sorted(res.env.labels)) or '(none)'}")
    if select not in SELECTIONS:
        raise bad(f"--select {select!r} is not one of {', '.join(SELECTIONS)}",
                  "--select unlabeled|relabel|disagreement|conflict")
    if not annotators or not all(annotators):
        raise bad("--annotators lists annotator ids separated by commas, none empty, e.g. "
                  "--annotators ann,bob,eve", "separate names by commas, with nothing after "
                  "the last one")
    repeated = sorted({a for a in annotators if annotators.count(a) > 1})
    if repeated:
        raise bad(f"--annotators lists {', '.join(repr(a) for a in repeated)} more than once "
                  "(spaces around a comma are dropped)", "list each annotator once")
    unsafe = [a for a in annotators if a in (".", "..") or any(
        c in "/\\" or not c.isprintable() for c in a)]
    if unsafe:  # an id names its file: DIR/<annotator>.json, never a path elsewhere
        raise bad(f"--annotators: {', '.join(repr(a) for a in unsafe)} cannot name a file "
                  "in --out", "annotator ids hold no '/', '\\' or control characters and "
                  "are not '.' or '..'")
    long = [a for a in annotators if len(f"{a}.json".encode()) > _NAME_MAX]
    if long:
        raise bad(f"--annotators: {', '.join(repr(a[:40] + '...') for a in long)} is too long "
                  f"to name a file ({_NAME_MAX} bytes with '.json')", "use shorter annotator ids")
    folded: dict[str, str] = {}
    for a in annotators:  # one file each, on case-insensitive file systems too
        other = folded.setdefault(unicodedata.normalize("NFC", a).casefold(), a)
        if other != a:
            raise bad(f"--annotators: {other!r} and {a!r} differ only in case or Unicode form; "
                      "their files would be one on some file systems",
                      "give each annotator an id of its own")
    if overlap < 1:
        raise bad(f"--overlap {overlap}: every example goes to at least one annotator",
                  "--overlap 1 (the default) or more")
    if seed < 0:
        raise bad(f"--seed {seed} is negative", "use a seed of 0 or more")
    if overlap > len(annotators):
        raise bad(f"--overlap {overlap} needs that many annotators per example; "
                  f"{len(annotators)} are listed", "list more annotators or lower --overlap")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise bad(f"--out {out} exists and is not an empty directory",
                  "name a new directory: task files are written all at once")
    spec = res.env.labels[name]
    allowed = set(res.env.privacy.annotators)
    if res.env.restricted(spec.dataset) and not set(annotators) <= allowed:
        raise DiagnosticError([res.diag(
            "BE879", f"dataset '{spec.dataset}' is restricted: annotators "
            f"{', '.join(sorted(set(annotators) - allowed))} are not allowed to see its "
            "examples", "privacy", hints=("list them under `privacy.annotators` (reviewed like "
                                          "any change of the privacy policy)",))], 2)


def _select(project: Project, res: Resolved, lock: Lock, sets: LabelSets, table: pa.Table,
            name: str, select: str, resolution: Any) -> pa.Array:
    """The distinct keys chosen, each a row of the dataset, in the dataset's order."""
    spec = res.env.labels[name]
    held = pc.unique(key_text(table.column(spec.key)))
    if select == "unlabeled":
        chosen = held.filter(pc.invert(pc.is_in(held, value_set=resolution.keys)))
    elif select == "relabel":
        chosen = held.filter(pc.is_in(held, value_set=pc.unique(resolution.relabel_keys)))
    elif select == "disagreement":
        ann = sets.file(name).annotations if spec.source is None else None
        if ann is None or not len(ann):
            chosen = pa.array([], pa.string())
        else:
            pairs = pa.table({"key": ann.keys, "label": ann.labels}).group_by("key").aggregate(
                [("label", "count_distinct")])
            split = pairs.filter(pc.greater(pairs.column("label_count_distinct"), 1))
            chosen = held.filter(pc.is_in(held, value_set=split.column("key")))
    else:
        chosen = held.filter(pc.is_in(held, value_set=_conflicts(project, res, lock, name)))
    return chosen.cast(pa.string())


def _conflicts(project: Project, res: Resolved, lock: Lock, name: str) -> pa.Array:
    """Keys whose labeling functions (of this set, or of computed sets of the same examples)
    vote for different classes."""
    spec = res.env.labels[name]
    computed = [n for n, s in res.env.labels.items() if s.source is not None
                and (s.dataset, s.key) == (spec.dataset, spec.key)]
    if not computed:
        raise DiagnosticError([res.diag(
            "BE868", f"--select conflict: no label set computed by labeling functions labels "
            f"the examples of '{name}' ({spec.dataset}.{spec.key})", "labels", name,
            hints=("declare one with `source: {functions: ...}`",))], 2)
    parsed = {n: parse_functions(project, res, n) for n in computed}
    problems = [p for f in parsed.values() for p in f.problems if p.is_error]
    if problems:
        raise DiagnosticError(problems, 1)
    matrices, problems = label_matrix(project, res, lock.datasets, parsed)
    if any(p.is_error for p in problems):
        raise DiagnosticError(problems, 1)
    parts = []
    for matrix in matrices.values():
        votes = matrix.votes.astype(np.int32)
        voting = votes >= 0
        high = np.where(voting, votes, -1).max(axis=1) if votes.shape[1] else None
        low = np.where(voting, votes, np.iinfo(np.int32).max).min(axis=1) \
            if votes.shape[1] else None
        if high is None or low is None:
            continue
        conflict = (voting.sum(axis=1) >= 2) & (high != low)
        parts.append(matrix.keys.filter(pa.array(conflict)))
    return pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())


def _seen(sources: list[Any], dataset: str, ui_version: str | None, name: str) -> pa.Table:
    """(key, annotator) pairs not to send: labeled under another UI version of any label set
    of the multiverse, or already in this label set."""
    parts = []
    for src in sources:
        ann = src.annotations
        if src.dataset != dataset or not len(ann):
            continue
        if src.own and src.display == name:
            keep = pa.array(np.ones(len(ann), bool))
        else:
            ui = ann.ui_versions
            keep = pc.fill_null(pc.not_equal(ui, pa.scalar(ui_version, pa.string())), True) \
                if ui_version is not None else pc.is_valid(ui)
        parts.append(pa.table({"key": ann.keys.filter(keep),
                               "annotator": ann.annotators.filter(keep)}))
    if not parts:
        return pa.table({"key": pa.array([], pa.string()), "annotator": pa.array([], pa.string())})
    return pa.concat_tables(parts)


def _first_rows(table: pa.Table, key: str) -> pa.Table:
    """One row per key (its first), with the key as text in `__key`."""
    text = key_text(table.column(key))
    unique = pc.unique(text)
    first = pc.index_in(unique, value_set=text)
    return table.take(first).append_column("__key", unique)


def _uncovered(res: Resolved, name: str, keys: pa.Array, eligible: dict[str, int],
               overlap: int, restricted: bool) -> Diagnostic:
    shown = ""
    if not restricted:
        listed = [f"{k} ({eligible.get(k, 0)} eligible)" for k in keys[:SHOWN].to_pylist()]
        shown = f": {', '.join(listed)}" + (", ..." if len(keys) > SHOWN else "")
    return res.diag("BE869", f"label set '{name}': {len(keys):,} example(s) cannot get "
                    f"{overlap} annotator(s) who have not seen them under another UI "
                    f"version{shown}", "labels", name,
                    hints=("add annotators who have not labeled these examples, or lower "
                           "--overlap; nothing was written",))


def _publish(project: Project, out: Path, files: dict[str, bytes]) -> None:
    """Write every file into a fresh directory, then move it to `out` in one rename. The
    directory gets the mode a `mkdir` would (the private one of the scratch directory would
    keep the files from the tools and people they are written for)."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = owned_temp_dir(scratch_dir(project.data_state_dir), "tasks")
    try:
        for filename, data in sorted(files.items()):
            (work / filename).write_bytes(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)
        if out.is_dir():
            out.rmdir()  # empty, checked before
        try:
            os.replace(work, out)
        except OSError:  # another filesystem: copy next to it, then rename
            staging = out.with_name(f".{out.name}.partial")
            shutil.copytree(work, staging)
            os.replace(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
