"""A label set computed by labeling functions: the label model over the matrix, what it yields,
and the figures that describe and gate it.

`compute` turns a `LabelMatrix` into one label per row (`label_model`), the label set's file
(the Parquet label form: `key`, `label`, `annotator`, `taxonomy_version`; one row per dataset
row that gets a label, in the dataset's order) and `Figures`: per function how many rows it
votes on, overlaps another function on, and conflicts with another on (and, where a gold label
set labels the row, how often it is right); for the set, its coverage (rows with a label),
conflict rate (rows with votes for two or more classes) and class shares. `gates` checks
`min_coverage` and `max_conflict` on the exact figures; messages about a restricted dataset
withhold them. `repeats` warns (BE889, in `buildenv labels`) when a key is on several rows: each
key takes its last labeled row's label. Writing is deterministic: the same votes give the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from buildenv.core.canonical import sha256_bytes
from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.env.resolve import Resolved
from buildenv.env.spec import LabelSet
from buildenv.labels.label_model import (
    FittedModel,
    Patterns,
    generative_patterns,
    majority_patterns,
)
from buildenv.labels.matrix import LabelMatrix, plain_integers

__all__ = ["ANNOTATOR", "Computed", "Figures", "Repeats", "compute", "gates", "gold_prior",
           "repeats"]

ANNOTATOR = "labeling-functions"


@dataclass
class Figures:
    """Exact counts over the dataset's rows (shown through the privacy policy)."""

    rows: int
    labeled: int
    conflicting: int
    per_class: dict[str, int]
    functions: dict[str, dict[str, int]]  # name -> votes, overlaps, conflicts, gold, correct
    gold_rows: int = 0  # rows a gold label set labels
    estimated_accuracy: dict[str, float] = field(default_factory=dict)  # generative only

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "labeled": self.labeled, "conflicting": self.conflicting,
                "per_class": dict(self.per_class), "functions": {
                    k: dict(v) for k, v in self.functions.items()}, "gold_rows": self.gold_rows,
                "estimated_accuracy": dict(self.estimated_accuracy)}


@dataclass
class Repeats:
    """Keys on two or more labeled rows, and how many of them got different labels there."""

    keys: int
    differing: int


@dataclass
class Computed:
    data: bytes  # the label set's Parquet file
    digest: str
    examples: int
    model: FittedModel
    model_data: bytes | None  # the fitted arrays as Parquet (generative)
    figures: Figures
    repeats: Repeats | None = None  # None: each labeled row has a key of its own


def gold_prior(classes: list[str], gold: pa.Array) -> np.ndarray:
    """Class shares of a gold label set's labels, add-one smoothed over the taxonomy. `gold`:
    the labels of the gold examples the dataset holds (`compute` leaves the others out: a key
    the dataset lacks says nothing of its class balance)."""
    index = pc.index_in(gold, value_set=pa.array(classes, pa.string()))
    codes = pc.drop_null(index).to_numpy(zero_copy_only=False).astype(np.int64)
    return (np.bincount(codes, minlength=len(classes)) + 1.0) / (len(codes) + len(classes))


def compute(spec: LabelSet, matrix: LabelMatrix, gold: tuple[pa.Array, pa.Array] | None
            ) -> Computed:
    """Labels, file and figures of a computed label set; `gold`: (keys, labels) of its gold
    label set."""
    source = spec.source
    assert source is not None
    classes = matrix.classes
    # the distinct vote rows, once: the label model and the figures work on them, and each
    # row takes its pattern's decision
    found = matrix.patterns()
    truth, present = _gold_truth(matrix, gold)
    if source.model == "generative":
        prior = gold_prior(classes, present) if present is not None else None
        chosen, model = generative_patterns(found, classes, matrix.functions, prior=prior,
                                            max_iterations=source.max_iterations,
                                            tolerance=source.tolerance)
    else:
        chosen = majority_patterns(found, len(classes))
        model = FittedModel("majority", list(classes), list(matrix.functions))
    decided = chosen[found.inverse]
    keep = decided >= 0
    kept = int(keep.sum())
    # every column built by Arrow (a Python string per row cost seconds at 10M rows)
    labels = pa.array(classes, pa.string()).take(pa.array(decided[keep]))
    keys = matrix.keys.filter(pa.array(keep))
    table = pa.table({"key": keys, "label": labels,
                      "annotator": _repeated(f"{ANNOTATOR}:{model.kind}", kept),
                      "taxonomy_version": _repeated(str(spec.taxonomy.version), kept)})
    data = _parquet(table)
    model_data = _parquet(model.table()) if model.kind == "generative" else None
    figures = _figures(matrix, found, chosen, truth)
    figures.estimated_accuracy = model.accuracies()
    numbers = matrix.numbers[keep] if matrix.numbers is not None else None
    examples = _distinct(keys, numbers)
    found_repeats = (_repeats(keys, decided[keep], numbers, len(classes))
                     if examples < kept - keys.null_count else None)
    return Computed(data, sha256_bytes(data), examples, model, model_data, figures,
                    found_repeats)


def _repeats(keys: pa.Array, labels: np.ndarray, numbers: np.ndarray | None, classes: int
             ) -> Repeats:
    """How many keys the labeled rows share, and how many of those got two or more labels.
    Only called when some do (fewer distinct keys than labeled rows)."""
    valid = keys.is_valid().to_numpy(zero_copy_only=False)
    if numbers is not None:
        _, codes = np.unique(numbers, return_inverse=True)
    else:
        encoded = pc.dictionary_encode(keys.filter(pa.array(valid)))
        codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = codes.astype(np.int64)
    labels = labels[valid].astype(np.int64)
    rows = np.bincount(codes)
    pairs = np.unique(codes * classes + labels)  # each key's distinct labels
    kinds = np.bincount(pairs // classes, minlength=len(rows))
    return Repeats(int((rows >= 2).sum()), int((kinds >= 2).sum()))


def _repeated(value: str, n: int) -> pa.Array:
    """`value` n times, as a string array built from its buffers."""
    data = value.encode("utf-8")
    if n * len(data) >= 2 ** 31:
        return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int32)))
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(data))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()),
                                                  pa.py_buffer(data * n)])


def _distinct(keys: pa.Array, numbers: np.ndarray | None = None) -> int:
    """How many distinct keys. Keys that are integers written plainly (an id column's text)
    are counted as integers, without hashing ten million strings; `numbers`: those integers,
    when the caller has them (the coded blocks keep them)."""
    if len(keys) < 2:
        return int(pc.count_distinct(keys).as_py() or 0)  # nulls are no key
    values = numbers if numbers is not None else plain_integers(keys)
    if values is None:
        return int(pc.count_distinct(keys).as_py() or 0)  # "007" and "7" are two keys
    low, high = int(values.min()), int(values.max())
    if high - low >= 4 * len(values):
        return len(np.unique(values))
    seen = np.zeros(high - low + 1, bool)
    seen[values - low] = True
    return int(seen.sum())


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True,
                   write_statistics=False)
    return sink.getvalue()


def _gold_truth(matrix: LabelMatrix, gold: tuple[pa.Array, pa.Array] | None
                ) -> tuple[np.ndarray | None, pa.Array | None]:
    """Each row's gold class (-1: none), and the labels of the gold examples the dataset
    holds, each once (the prior's counts), from the gold set's (keys, labels)."""
    if gold is None:
        return None, None
    if not len(gold[0]):
        return None, gold[1]
    at = pc.index_in(matrix.keys, value_set=gold[0])
    found_gold = at.is_valid().to_numpy(zero_copy_only=False)
    positions = pc.fill_null(at, 0).to_numpy(zero_copy_only=False)
    codes = pc.index_in(gold[1], value_set=pa.array(matrix.classes, pa.string()))
    codes_np = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    truth = np.where(found_gold, codes_np[positions], -1)
    held = np.unique(positions[found_gold])  # a key on several rows is one gold example
    return truth, gold[1].take(pa.array(held, pa.int64()))


def _figures(matrix: LabelMatrix, found: Patterns, chosen: np.ndarray,
             truth: np.ndarray | None) -> Figures:
    """Counted over the distinct vote rows (`chosen`: each one's decision), weighted by how
    many rows have each; what a gold set decides (`truth`: each row's gold class, -1 none) is
    counted row by row."""
    votes, weight = found.rows, found.counts
    n = matrix.rows
    voting = votes >= 0
    count = voting.sum(axis=1)
    if votes.shape[1]:
        wide = votes.astype(np.int32)  # the matrix may be int8: room for the sentinels
        high = np.where(voting, wide, -1).max(axis=1)
        low = np.where(voting, wide, np.iinfo(np.int32).max).min(axis=1)
        conflict = (count >= 2) & (high != low)
    else:
        conflict = np.zeros(len(weight), bool)
    functions = {}
    for j, name in enumerate(matrix.functions):
        mine = voting[:, j]
        judged = correct = 0
        if truth is not None:
            column = votes[:, j][found.inverse]  # the function's vote on each row
            rows_judged = (column >= 0) & (truth >= 0)
            judged = int(rows_judged.sum())
            correct = int((rows_judged & (column == truth)).sum())
        functions[name] = {"votes": int(weight[mine].sum()),
                           "overlaps": int(weight[mine & (count >= 2)].sum()),
                           "conflicts": int(weight[mine & conflict].sum()), "gold": judged,
                           "correct": correct}
    decided = chosen >= 0
    per_class = np.zeros(len(matrix.classes), np.int64)
    np.add.at(per_class, chosen[decided], weight[decided])
    return Figures(n, int(weight[decided].sum()), int(weight[conflict].sum()),
                   {c: int(per_class[k]) for k, c in enumerate(matrix.classes)}, functions,
                   int((truth >= 0).sum()) if truth is not None else 0)


def repeats(res: Resolved, name: str, matrix: LabelMatrix, computed: Computed
            ) -> list[Diagnostic]:
    """BE889 (a warning): keys on several rows. A key names one example, so each takes the
    label of its last labeled row (rule 2 of the resolution: one annotator's latest), and a
    training reads every row of the key with that label. Over restricted data, whether labeled
    rows share a key depends on which rows the functions label; the warning then says only
    whether the dataset's keys repeat (the data alone), without counts."""
    spec = res.env.labels[name]
    if res.env.restricted(spec.dataset):
        if _distinct(matrix.keys, matrix.numbers) >= matrix.rows - matrix.keys.null_count:
            return []
        what = (f"keys of '{spec.dataset}' repeat on several rows (counts withheld: the "
                "dataset is restricted)")
    elif computed.repeats is None:
        return []
    else:
        found = computed.repeats
        what = (f"{found.keys:,} key(s) of '{spec.dataset}' are on several labeled rows "
                f"({found.differing:,} with different labels on them)")
    return [res.diag(
        "BE889", f"label set '{name}': {what}; a key names one example, so each takes its last "
        "labeled row's label (in file order) and a training reads every row of the key with it",
        "labels", name, "key", severity=Severity.WARNING,
        hints=(f"label a dataset with one row per `{spec.key}` (a derived dataset that "
               "combines each key's rows), or key the set by a column that names one row",))]


def gates(res: Resolved, name: str, figures: Figures) -> list[Diagnostic]:
    """BE876 / BE877: coverage below `min_coverage`, conflict above `max_conflict`. Decided on
    the exact figures; shown only when the dataset is not restricted."""
    spec = res.env.labels[name]
    source = spec.source
    assert source is not None
    hidden = res.env.restricted(spec.dataset)
    problems = []
    rows = max(figures.rows, 1)
    coverage, conflict = figures.labeled / rows, figures.conflicting / rows

    def shown(value: float) -> str:
        return "(figure withheld: the dataset is restricted)" if hidden else f"{value:.1%}"

    def each(what: str, count: str) -> tuple[str, ...]:
        # the lock that fails here writes nothing, so `labels` cannot show these yet
        if hidden:
            return ()
        return (f"each function's {what}: " + ", ".join(
            f"{fn} {values[count] / rows:.1%}" for fn, values in figures.functions.items()),)

    # `labels` and `tasks` need the set locked: relaxing the gate is the way to them
    later = (f"`buildenv labels {res.name}` shows every figure{' as released' if hidden else ''}"
             " once the set locks (until the functions are better, relax the gate to lock)")
    if source.min_coverage is not None and coverage < source.min_coverage:
        problems.append(res.diag(
            "BE876", f"label set '{name}': coverage {shown(coverage)} of the rows of "
            f"'{spec.dataset}' is below min_coverage {source.min_coverage:.1%}", "labels",
            name, "source", "min_coverage",
            hints=(*each("coverage", "votes"), "add labeling functions for the rows no "
                   f"function votes on; {later}")))
    if source.max_conflict is not None and conflict > source.max_conflict:
        problems.append(res.diag(
            "BE877", f"label set '{name}': {shown(conflict)} of the rows get votes for two or "
            f"more classes, above max_conflict {source.max_conflict:.1%}", "labels", name,
            "source", "max_conflict",
            hints=(*each("conflicts (rows where another function votes another class)",
                         "conflicts"),
                   f"{later}; then `buildenv tasks {res.name} --labels {source.gold or name} "
                   "--select conflict --annotators ... --out DIR` sends those rows to "
                   "annotators")))
    return problems
