"""Building label sets computed by labeling functions: what `buildenv lock` and a build run for
`source: {functions}`.

For each such label set of an environment: check its functions statically
(`labels.functions`), find the (function, file) votes not cached yet (`labels.matrix`), apply
those in the build's hermetic process -- every label set of the environment in one process --
assemble the label matrix (from each file's coded block: a new file codes its own), fit the
label model, write the label set's file (the Parquet label form, under
`.buildenv/labels/<env>/`) and pin it with its `source` record. Adding a file of data applies
every function to that file; changing one function applies that one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from buildenv.compile.source_process import SourceProcess
from buildenv.compile.verify import located
from buildenv.core import progress
from buildenv.core.atomic import atomic_write_bytes
from buildenv.core.canonical import digest_json, sha256_bytes
from buildenv.core.code import code_files
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.core.tempdirs import owned_temp_dir
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.computed_labels import declared_files, model_version
from buildenv.data.lock.derived import Pinned, narrowed
from buildenv.data.lock.lockfile import RESTRICTED_OUTPUT, LockedDataset, LockedLabels
from buildenv.data.lock.locking import label_declaration
from buildenv.data.lock.read_files import declared, file_digests, locked_reads, pinnable
from buildenv.data.storage import locate
from buildenv.env.resolve import Resolved
from buildenv.labels.functions import ParsedFunctions, parse_functions
from buildenv.labels.labelset import LabelError, LabelSets
from buildenv.labels.matrix import (
    ArrayStore,
    BlockStore,
    FileVotes,
    LabelMatrix,
    assemble,
    data_files,
    key_key,
    missing,
    vote_key,
)
from buildenv.labels.weak import Computed, compute, gates, repeats

__all__ = ["BuiltLabels", "build_labels", "label_matrix", "model_path", "save_labels"]


@dataclass
class BuiltLabels:
    entries: dict[str, LockedLabels] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    computed: dict[str, Computed] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)  # label set -> (function, file) pairs
    # what `buildenv labels` says of the sets (BE889), not the lock: a lock with a warning
    # records no plan, so every next lock would take the long way
    notes: list[Diagnostic] = field(default_factory=list)


def model_path(project: Project, digest: str) -> Path:
    """Where a fitted label model's arrays are kept (Parquet, by digest)."""
    hexdigest = digest.split(":", 1)[1]
    return project.data_state_dir / "labels" / "models" / hexdigest[:2] / f"{hexdigest}.parquet"


def build_labels(project: Project, res: Resolved, datasets: dict[str, LockedDataset],
                 labels: dict[str, LockedLabels], only: set[str] | None = None,
                 write: bool = True) -> BuiltLabels:
    """Compute and pin the computed label sets of `res` (all, or `only` those), given the
    lock's datasets and its annotated label sets."""
    built = BuiltLabels()
    names = [n for n, spec in res.env.labels.items()
             if spec.source is not None and (only is None or n in only)]
    if not names:
        return built
    parsed = {n: parse_functions(project, res, n) for n in names}
    for functions in parsed.values():
        built.problems.extend(functions.problems)
    for name in names:
        unmatched = _unmatched(project, res, name)
        parsed[name].problems.extend(unmatched)
        built.problems.extend(unmatched)
    ready = [n for n in names if not any(p.is_error for p in parsed[n].problems)]
    previous = locked_reads(project, res.name)
    reads = {n: file_digests(project.root, {*previous.get(("labels", n), ()),
                                            *declared_files(project, res, n)})
             for n in ready}
    matrices, problems = label_matrix(project, res, datasets, {n: parsed[n] for n in ready},
                                      built.applied, reads)
    built.problems.extend(problems)
    for name, matrix in matrices.items():
        spec = res.env.labels[name]
        assert spec.source is not None
        outside = _outside(res, name, matrix)
        if outside:
            built.problems.extend(outside)
            continue
        try:
            gold = _gold(project, res, name, datasets, labels)
        except LabelError as exc:
            built.problems.extend(exc.diagnostics)
            continue
        computed = compute(spec, matrix, gold)
        built.computed[name] = computed
        built.notes.extend(repeats(res, name, matrix, computed))
        found = gates(res, name, computed.figures)
        built.problems.extend(found)
        if any(p.is_error for p in found):
            continue
        model_digest = sha256_bytes(computed.model_data) if computed.model_data else None
        gold_name = spec.source.gold
        record: dict[str, Any] = {
            "functions": dict(sorted(parsed[name].digests.items())),
            "dataset": datasets[spec.dataset].digest, "model": spec.source.model,
            "model_digest": model_digest,
            "gold": labels[gold_name].digest if gold_name in labels else None}
        if model_version(spec.source) > 1:  # the first algorithms' locks stay as they were
            record["model_version"] = model_version(spec.source)
        if reads.get(name):  # only then: a lock of functions that read no file is as it was
            record["files_read"] = dict(sorted(reads[name].items()))
        # over restricted data the counts (and the file's size) are the functions' exact
        # figures, which a relock would difference: the lock pins the set by digest alone
        withheld = res.env.restricted(spec.dataset)
        built.entries[name] = LockedLabels(
            spec.uri, "parquet", computed.digest, None if withheld else len(computed.data),
            None if withheld else computed.examples,
            None if withheld else computed.figures.labeled, None if withheld else 1,
            {"name": spec.taxonomy.name, "version": spec.taxonomy.version}, None,
            label_declaration(spec), {}, record, RESTRICTED_OUTPUT if withheld else None)
    if write:
        save_labels(project, res, built)
    return built


def save_labels(project: Project, res: Resolved, built: BuiltLabels) -> None:
    """Write each pinned label set's file and its label model's arrays."""
    for name in built.entries:
        computed = built.computed[name]
        if computed.model_data is not None:
            path = model_path(project, sha256_bytes(computed.model_data))
            if not path.is_file():
                atomic_write_bytes(path, computed.model_data)
        _write(project, res.env.labels[name].uri, computed.data)


def _unmatched(project: Project, res: Resolved, name: str) -> list[Diagnostic]:
    """BE878 for each glob of label set `name`'s `source.files` that matches no file."""
    source = res.env.labels[name].source
    assert source is not None
    unmatched = declared(project.root, source.files)[1] if source.files else []
    return [res.diag("BE878", f"label set '{name}': `files` glob '{g}' matches no file of the "
                     "repository", "labels", name, "source", "files", source.files.index(g),
                     hints=("globs are relative to the repository root (`rules/*.txt`); fix "
                            "the glob or drop it",)) for g in unmatched]


def keyed(parsed: ParsedFunctions, reads: dict[str, str | None]) -> ParsedFunctions:
    """`parsed` whose functions' digests hold the digests of the repository files the
    functions read (`reads`: their votes change when such a file does); as it is without any,
    so that the votes of functions that read no file keep their keys."""
    if not reads:
        return parsed
    files = dict(sorted(reads.items()))
    return replace(parsed, functions=[
        replace(f, digest=digest_json({"function": f.digest, "files_read": files}))
        for f in parsed.functions])


def label_matrix(project: Project, res: Resolved, datasets: dict[str, LockedDataset],
                 parsed: dict[str, ParsedFunctions], applied: dict[str, int] | None = None,
                 reads: dict[str, dict[str, str | None]] | None = None
                 ) -> tuple[dict[str, LabelMatrix], list[Diagnostic]]:
    """The label matrix of each label set, applying in one process what is not cached.
    `reads`: each set's repository files its functions read when they last ran, by digest
    now; updated with what they read in this run (the votes are keyed by them)."""
    votes, keys = ArrayStore(project, "votes"), ArrayStore(project, "keys")
    blocks = BlockStore(project, "blocks")  # each file's votes coded (`labels.matrix`)
    reads = reads if reads is not None else {}
    planned = {n: keyed(found, reads.get(n) or {}) for n, found in parsed.items()}
    todo: dict[str, list[FileVotes]] = {}
    for name, found in planned.items():
        spec = res.env.labels[name]
        pin = _pin(datasets[spec.dataset])
        need = missing(pin, found.digests, spec.key, votes, keys)
        if need:
            todo[name] = need
    if todo:
        pairs = sum(len(f.functions) for need in todo.values() for f in need)
        with progress.task(f"apply labeling functions ({pairs} function-file pairs)"):
            problems = _apply(project, res, datasets, planned, todo, votes, keys,
                              _rekey(project, res, datasets, parsed, planned, reads, votes))
        if any(p.is_error for p in problems):
            return {}, problems
        if applied is not None:
            applied.update({n: sum(len(f.functions) for f in need) for n, need in todo.items()})
        planned = {n: keyed(found, reads.get(n) or {}) for n, found in parsed.items()}
    out = {}
    for name, found in planned.items():
        spec = res.env.labels[name]
        matrix = assemble(_pin(datasets[spec.dataset]), found.digests, spec.key,
                          list(spec.taxonomy.classes), votes, keys, blocks)
        if matrix is None:
            return {}, [res.diag("BE345", f"label set '{name}': cached votes were damaged or "
                                 "removed while they were read; run the command again",
                                 "labels", name, "source")]
        out[name] = matrix
    return out, []


def _pin(entry: LockedDataset) -> Pinned:
    return Pinned(entry.digest, entry.manifest)


Rekey = Callable[[dict[str, list[FileVotes]], dict[str, list[str]]],
                 dict[str, dict[tuple[str, str], str]]]
"""Given the pairs a run applied and the repository files each label set's functions read in
it: each new vote's key (label set -> (function, data file digest) -> key)."""


def _rekey(project: Project, res: Resolved, datasets: dict[str, LockedDataset],
           parsed: dict[str, ParsedFunctions], planned: dict[str, ParsedFunctions],
           reads: dict[str, dict[str, str | None]], votes: ArrayStore) -> Rekey:
    """What `_apply` calls once the functions ran, with the repository files each job's
    functions read: the key to store each new vote under (function, file digest -> key), by
    the files read -- every pair applied, exactly those; some, those added to the last lock's.
    The votes already stored (made without reading the new files) are stored under their new
    keys too. `reads` is updated."""
    def rekey(todo: dict[str, list[FileVotes]], found: dict[str, list[str]]
              ) -> dict[str, dict[tuple[str, str], str]]:
        keys: dict[str, dict[tuple[str, str], str]] = {}
        for name, need in todo.items():
            before = reads.get(name) or {}
            code = code_files(project, parsed[name].path)
            kept = set(pinnable(project, res.env, code, found.get(name, ())))
            kept.update(declared_files(project, res, name))
            files = data_files(_pin(datasets[res.env.labels[name].dataset]))
            if sum(len(f.functions) for f in need) < len(parsed[name].functions) * len(files):
                kept |= set(before)
            after = before if kept == set(before) else file_digests(project.root, kept)
            reads[name] = after
            final = keyed(parsed[name], after).digests
            was = planned[name].digests
            ran = {(fn, f.digest) for f in need for fn in f.functions}
            keys[name] = {(fn, d): vote_key(final[fn], d) for fn, d in ran}
            if after is not before:
                for fn in final:
                    for _, d, _ in files:
                        if (fn, d) not in ran:
                            votes.alias(vote_key(was[fn], d), vote_key(final[fn], d))
        return keys

    return rekey


def _apply(project: Project, res: Resolved, datasets: dict[str, LockedDataset],
           parsed: dict[str, ParsedFunctions], todo: dict[str, list[FileVotes]],
           votes: ArrayStore, keys: ArrayStore, rekey: Rekey | None = None
           ) -> list[Diagnostic]:
    used = {res.env.labels[n].dataset for n in todo}
    manifests = {d: m for d in used if (m := datasets[d].manifest) is not None}
    modules = tuple(dict.fromkeys(parsed[n].path for n in todo))
    # it imports while the jobs are put together
    process = SourceProcess.start(project, res, modules, narrowed(res.env, sorted(used)),
                                  manifests)
    work = owned_temp_dir(process.out, "label-functions")
    try:
        jobs: list[dict[str, Any]] = []
        # each object to store: its store, key and file, and (votes) its label set, function
        # and data file's digest, by which it is keyed again once the files read are known
        moves: list[tuple[ArrayStore, str, Path, tuple[str, str, str] | None]] = []
        for name, need in todo.items():
            spec = res.env.labels[name]
            entry = datasets[spec.dataset]
            entries = {f.path: f for f in entry.manifest.files} if entry.manifest else {}
            digests = parsed[name].digests
            files = []
            for f in need:
                votes_out = {}
                for fn in f.functions:
                    out = work / f"{len(moves)}.parquet"
                    moves.append((votes, vote_key(digests[fn], f.digest), out,
                                  (name, fn, f.digest)))
                    votes_out[fn] = str(out)
                keys_out = None
                if f.keys:
                    out = work / f"{len(moves)}.parquet"
                    moves.append((keys, key_key(f.digest, spec.key), out, None))
                    keys_out = str(out)
                files.append({"input_path": f.path,
                              "entry": entries[f.path].to_json() if f.path else None,
                              "functions": list(f.functions), "votes_out": votes_out,
                              "keys_out": keys_out})
            jobs.append({"kind": "functions", "label_set": name,
                         "module": parsed[name].path, "declared": parsed[name].names,
                         "dataset": spec.dataset,
                         "key": spec.key, "classes": list(spec.taxonomy.classes),
                         "taxonomy_version": str(spec.taxonomy.version), "files": files})
        pins = {d: datasets[d].digest for d in used}
        first = next(iter(todo))
        timeout = max(_timeout(res, n) for n in todo)
        result = process.run(res, jobs, pins, manifests, timeout, parsed[first].path,
                             f"raise `labels.{first}.source.timeout`")
        if not result.get("ok"):
            return [located(res, d) for d in result.get("diagnostics", [])]
        applying = (result.get("timings") or {}).get("apply")
        task = progress.current()
        if task is not None and isinstance(applying, (int, float)):
            # the functions' own share (reading, calling, writing votes) beside the process's
            task.timings["applying"] = float(applying)
        found = {n: [p for p in paths if isinstance(p, str)]
                 for n, paths in zip(todo, result.get("reads") or [])}
        final = rekey(todo, found) if rekey is not None else {}
        for store, key, out, pair in moves:
            if pair is not None and pair[0] in final:
                key = final[pair[0]][pair[1:]]
            store.put(key, out)
        return []
    finally:
        process.close()
        shutil.rmtree(work, ignore_errors=True)


def _timeout(res: Resolved, name: str) -> float:
    source = res.env.labels[name].source
    assert source is not None
    return source.timeout


def _outside(res: Resolved, name: str, matrix: LabelMatrix) -> list[Diagnostic]:
    """BE874 for cached votes of classes the taxonomy no longer has."""
    spec = res.env.labels[name]
    hidden = res.env.restricted(spec.dataset)
    return [res.diag("BE874", f"label set '{name}': labeling function '{fn}' votes for "
                     f"{sum(counts.values()):,} row(s) with classes outside taxonomy "
                     f"v{spec.taxonomy.version}"
                     + ("" if hidden else f": {', '.join(sorted(counts)[:5])}"),
                     "labels", name, "taxonomy",
                     hints=("return classes of the taxonomy, or add the classes to it",))
            for fn, counts in sorted(matrix.outside.items())]


def _gold(project: Project, res: Resolved, name: str, datasets: dict[str, LockedDataset],
          labels: dict[str, LockedLabels]) -> tuple[pa.Array, pa.Array] | None:
    """(keys, labels) of the label set's gold label set, read as the lock pins it."""
    spec = res.env.labels[name]
    assert spec.source is not None
    gold = spec.source.gold
    if gold is None or gold not in labels:
        return None
    gate = Gate(project, res.env, "lock", pins={n: d.digest for n, d in datasets.items()},
                manifests={n: d.manifest for n, d in datasets.items() if d.manifest},
                where=res)
    sets = LabelSets(gate, {n: e.pins() for n, e in labels.items()}, res)
    table = sets.resolve(gold).table()
    return table.column("key").combine_chunks(), table.column("label").combine_chunks()


def _write(project: Project, uri: str, data: bytes) -> None:
    path = locate(uri, project).local
    assert path is not None  # computed label sets live under the state dir
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)
