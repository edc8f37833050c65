"""From annotations to one label per example: the documented resolution rule.

1. **Cancelled** annotations and annotations without a choice for the field were already
   skipped when the export was read.
2. **One vote per annotator and example**: an annotator who labeled an example several times
   in this set counts once, with their latest annotation (`created_at`, then file order).
3. **Majority**: the class with the most votes is the example's label. When two or more
   classes share the most votes the example is **tied**: it gets no label from this set (a
   warning counts them; adjudicate by adding an annotation).
4. **Reuse**: examples this set does not annotate at all take the label of a reused set, in
   the order `reuse` lists them, mapped into this taxonomy (`sssom.decide`): exact and
   fine-to-coarse mappings carry over; a class that was split (or has several targets, a
   `closeMatch`, or no row) cannot, and those examples need relabeling (counted per class;
   `ambiguous: refuse` makes it an error). An example annotated here, even tied, never takes a
   reused label: newer annotations win.

Everything is vectorised over dictionary codes (numpy sorts and `unique`), so a million
annotations resolve in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.env.spec import LabelSet, Reuse
from buildenv.labels.annotations import Annotations
from buildenv.labels.sssom import Decision

__all__ = ["Resolution", "Votes", "dictionary_codes", "latest_per_annotator", "resolve_set", "vote"]

_MIN_TIME = np.iinfo(np.int64).min


@dataclass
class Votes:
    """The outcome of rules 2 and 3 over one set's own annotations."""

    keys: pa.Array  # string: every annotated example
    labels: pa.Array  # string, null where tied
    votes: np.ndarray  # int64: votes for the winning class (or the tied classes)
    voters: np.ndarray  # int64: annotators who labeled the example
    tied: np.ndarray  # bool

    @property
    def annotated(self) -> int:
        return len(self.keys)


def dictionary_codes(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary)


def latest_per_annotator(ann: Annotations) -> np.ndarray:
    """Indices of each annotator's latest annotation of each example (rule 2)."""
    n = len(ann)
    if n == 0:
        return np.zeros(0, np.int64)
    key, _ = dictionary_codes(ann.keys)
    who, _ = dictionary_codes(ann.annotators)
    times = pc.fill_null(ann.created_at.cast(pa.int64()), _MIN_TIME).to_numpy(
        zero_copy_only=False)
    idx = np.lexsort((np.arange(n), times, who, key))
    k, a = key[idx], who[idx]
    last = np.ones(n, dtype=bool)
    last[:-1] = (k[1:] != k[:-1]) | (a[1:] != a[:-1])
    return np.sort(idx[last])


def vote(ann: Annotations) -> Votes:
    """Rules 2 and 3: one vote per annotator, then the majority (ties marked)."""
    chosen = latest_per_annotator(ann)
    if not len(chosen):
        empty = np.zeros(0, np.int64)
        return Votes(pa.array([], pa.string()), pa.array([], pa.string()), empty, empty,
                     np.zeros(0, bool))
    keys = ann.keys.take(pa.array(chosen))
    labels = ann.labels.take(pa.array(chosen))
    key, key_dict = dictionary_codes(keys)
    label, label_dict = dictionary_codes(labels)
    width = max(len(label_dict), 1)
    combos, counts = np.unique(key * width + label, return_counts=True)
    ck, cl = combos // width, combos % width
    order = np.lexsort((cl, -counts, ck))
    ck, cl, counts = ck[order], cl[order], counts[order]
    first = np.ones(len(ck), dtype=bool)
    first[1:] = ck[1:] != ck[:-1]
    at = np.flatnonzero(first)
    runner_up = np.zeros(len(at), np.int64)
    nxt = at + 1
    has = nxt < len(ck)
    has[has] = ck[nxt[has]] == ck[at[has]]
    runner_up[has] = counts[nxt[has]]
    top = counts[at]
    tied = runner_up == top
    voters = np.bincount(key, minlength=len(key_dict))[ck[at]]
    winner = label_dict.take(pa.array(cl[at]))
    winner = pc.if_else(pa.array(tied), pa.nulls(len(at), pa.string()), winner)
    return Votes(key_dict.take(pa.array(ck[at])), winner, top, voters.astype(np.int64), tied)


@dataclass
class Resolution:
    """One label per example of a label set (after reuse), and how each was obtained."""

    name: str
    taxonomy: str
    keys: pa.Array  # string, unique
    labels: pa.Array  # string
    sources: np.ndarray  # int64 index into `source_names`
    source_names: list[str]
    votes: Votes
    reused: dict[str, int] = field(default_factory=dict)  # reused set -> examples taken
    reused_kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # set -> kind -> n
    relabel: dict[str, dict[str, int]] = field(default_factory=dict)  # set -> old class -> n
    problems: list[Diagnostic] = field(default_factory=list)
    relabel_keys: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    """Keys of reused examples whose class has no single mapping (they need relabeling)."""

    def table(self) -> pa.Table:
        """`key` and `label` columns: what `ctx.read`, `ctx.labels()` and evaluation align
        dataset rows with."""
        return pa.table({"key": self.keys, "label": self.labels})

    def per_class(self) -> dict[str, int]:
        if not len(self.labels):
            return {}
        counts = pc.value_counts(self.labels)
        return dict(sorted(zip(counts.field(0).to_pylist(), counts.field(1).to_pylist()),
                           key=lambda kv: (-kv[1], str(kv[0]))))

    @property
    def from_reuse(self) -> int:
        return sum(self.reused.values())

    @property
    def needs_relabel(self) -> int:
        return sum(sum(v.values()) for v in self.relabel.values())

    def summary(self) -> dict[str, Any]:
        return {"examples": len(self.keys), "annotated": self.votes.annotated,
                "own": int((self.sources == 0).sum()), "tied": int(self.votes.tied.sum()),
                "from_reuse": self.from_reuse, "reused": dict(self.reused),
                "reused_by_mapping": {k: dict(v) for k, v in self.reused_kinds.items()},
                "needs_relabel": self.needs_relabel,
                "relabel": {k: dict(v) for k, v in self.relabel.items()},
                "per_class": self.per_class()}


_WHY = {"split": "split: narrowMatch", "several": "several targets",
        "close": "closeMatch only", "unmapped": "no mapping row"}

Place = Callable[..., Diagnostic]  # (code, message, *yaml path, severity=..., hints=...) -> Diagnostic


def resolve_set(name: str, spec: LabelSet, own: Annotations,
                reused: list[tuple[Reuse, Resolution, dict[str, Decision]]],
                place: Place) -> Resolution:
    """Rules 1-4 for one label set, given its annotations and its reused sets' resolutions."""
    votes = vote(own)
    labeled = ~votes.tied
    keys = [votes.keys.filter(pa.array(labeled))]
    labels = [votes.labels.filter(pa.array(labeled))]
    sources = [np.zeros(int(labeled.sum()), np.int64)]
    names = [name]
    problems: list[Diagnostic] = []
    if votes.tied.any():
        problems.append(place(
            "BE861", f"label set '{name}': {int(votes.tied.sum()):,} example(s) have tied "
            "votes (two or more classes share the most annotators) and get no label",
            "labels", name, severity=Severity.WARNING,
            hints=("add an annotation to break each tie; `buildenv labels` shows the "
                   "agreement",)))
    taken = votes.keys
    reused_counts: dict[str, int] = {}
    kinds: dict[str, dict[str, int]] = {}
    relabel: dict[str, dict[str, int]] = {}
    ambiguous: list[pa.Array] = []
    for i, (entry, other, decisions) in enumerate(reused):
        fresh = pc.invert(pc.is_in(other.keys, value_set=taken))
        cand_keys, cand_labels = other.keys.filter(fresh), other.labels.filter(fresh)
        codes, classes = dictionary_codes(cand_labels)
        old = classes.to_pylist()
        targets = pa.array([decisions[c].target if c in decisions else None for c in old],
                           pa.string())
        mapped = targets.take(pa.array(codes))
        ok = np.asarray(mapped.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        ambiguous.append(cand_keys.filter(pa.array(~ok)))
        names.append(entry.labels)
        keys.append(cand_keys.filter(pa.array(ok)))
        labels.append(mapped.filter(pa.array(ok)))
        sources.append(np.full(int(ok.sum()), len(names) - 1, np.int64))
        taken = pa.concat_arrays([taken, cand_keys])
        reused_counts[entry.labels] = int(ok.sum())
        per_old_ok = np.bincount(codes[ok], minlength=len(old))
        per_old_lost = np.bincount(codes[~ok], minlength=len(old))
        by_kind: dict[str, int] = {}
        lost: dict[str, int] = {}
        for c, n_ok, n_lost in zip(old, per_old_ok.tolist(), per_old_lost.tolist()):
            kind = decisions[c].kind if c in decisions else "unmapped"
            if n_ok:
                by_kind[kind] = by_kind.get(kind, 0) + n_ok
            if n_lost:
                lost[c] = n_lost
        kinds[entry.labels] = by_kind
        if lost:
            relabel[entry.labels] = dict(sorted(lost.items(), key=lambda kv: (-kv[1], kv[0])))
            why = ", ".join(f"{c} {n:,} ({_WHY[decisions[c].kind if c in decisions else 'unmapped']})"
                            for c, n in relabel[entry.labels].items())
            refuse = entry.ambiguous == "refuse"
            problems.append(place(
                "BE860", f"label set '{name}': {sum(lost.values()):,} example(s) labeled in "
                f"'{entry.labels}' need relabeling: their class has no single automatic "
                f"mapping into {spec.taxonomy.name} v{spec.taxonomy.version} ({why})",
                "labels", name, "reuse", i, severity=Severity.ERROR if refuse
                else Severity.WARNING,
                hints=(("`ambiguous: refuse` is set: relabel them, or set `ambiguous: skip` to "
                        "train on the rest") if refuse else
                       "they are left out; annotate them in this set to use them",)))
    all_keys = pa.concat_arrays(keys)
    all_labels = pa.concat_arrays(labels)
    lost = pa.concat_arrays(ambiguous) if ambiguous else pa.array([], pa.string())
    return Resolution(name, spec.taxonomy.name, all_keys, all_labels, np.concatenate(sources),
                      names, votes, reused_counts, kinds, relabel, problems, lost)
