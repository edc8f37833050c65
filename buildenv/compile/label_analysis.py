"""How labeling functions do, as `buildenv labels` shows it, within the privacy policy.

For each label set computed by functions: per function its coverage (share of the dataset's
rows it votes on), overlaps (rows another function also votes on), conflicts (rows another
function votes differently on) and, where the gold label set labels rows, its empirical
accuracy; for the set its coverage, conflict rate and class shares. The figures are counts of
rows, released through `access.count_release` (exact, withheld below `min_group_size`, or
differentially private from the budget when `privacy.release: dp`), and everything shown is
computed from what was released: designers improve rules without seeing rows. The generative
model's estimated accuracies are shown only for datasets that are not restricted.
"""

from __future__ import annotations

from typing import Any

from buildenv.access.count_release import release_counts
from buildenv.compile.label_functions import build_labels
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.lock.lockfile import Lock
from buildenv.env.resolve import Resolved
from buildenv.labels.weak import Figures

__all__ = ["function_figures"]


def function_figures(project: Project, res: Resolved, lock: Lock
                     ) -> tuple[dict[str, dict[str, Any]], list[Diagnostic]]:
    """label set -> its figures as they may be shown; and notes (withheld releases)."""
    annotated = {n: e for n, e in lock.labels.items() if e.source is None}
    built = build_labels(project, res, lock.datasets, annotated, write=False)
    problems = [p for p in built.problems if p.is_error] + built.notes
    out = {}
    for name, computed in built.computed.items():
        spec = res.env.labels[name]
        source = spec.source
        assert source is not None
        digest = lock.datasets[spec.dataset].digest
        counts = _counts(computed.figures)
        # the rows of an output computed over restricted data are the code's choice: the lock
        # withholds them, so they are a count like the others (and every share's denominator)
        if lock.datasets[spec.dataset].counts_withheld is not None:
            counts["rows"] = computed.figures.rows
        released = release_counts(project, res.env, spec.dataset, digest, counts,
                                  key=digest_json({"labels": name, "entry": lock.labels[name]
                                                   .digest, "data": digest,
                                                   "counts": sorted(counts)}),
                                  purpose="labels")
        problems.extend(released.notes)
        hidden = res.env.restricted(spec.dataset)
        out[name] = _shown(computed.figures, released.counts, hidden,
                           {"module": source.functions, "model": source.model,
                            "gold": source.gold, "release": released.to_json()})
    return out, problems


def _counts(figures: Figures) -> dict[str, int]:
    counts = {"labeled": figures.labeled, "conflicting": figures.conflicting}
    counts.update({f"class:{c}": n for c, n in figures.per_class.items()})
    for name, values in figures.functions.items():
        counts.update({f"function:{name}:{k}": v for k, v in values.items()})
    if figures.gold_rows:
        counts["gold_rows"] = figures.gold_rows
    return counts


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    # six digits: the text shows one decimal of a percentage, and a ratio already rounded to
    # four would round again (9/41 shown 21.9% beside the class count's 22.0%)
    return round(min(max(part / whole, 0.0), 1.0), 6)


def _shown(figures: Figures, counts: dict[str, float | None], hidden: bool,
           about: dict[str, Any]) -> dict[str, Any]:
    rows = counts["rows"] if "rows" in counts else float(figures.rows)
    labeled = counts["labeled"]
    functions = {}
    for name in figures.functions:
        def got(what: str, fn: str = name) -> float | None:
            return counts.get(f"function:{fn}:{what}")

        functions[name] = {
            "coverage": _ratio(got("votes"), rows), "overlaps": _ratio(got("overlaps"), rows),
            "conflicts": _ratio(got("conflicts"), rows),
            "accuracy": _ratio(got("correct"), got("gold")) if figures.gold_rows else None,
            "judged_rows": None if not figures.gold_rows or got("gold") is None
            else int(got("gold") or 0),
            "estimated_accuracy": None if hidden else (
                round(figures.estimated_accuracy[name], 6)
                if name in figures.estimated_accuracy else None)}
    per_class = {c: _ratio(counts[f"class:{c}"], labeled) for c in figures.per_class}
    return {**about, "rows": None if rows is None else int(rows), "labeled": labeled,
            "coverage": _ratio(labeled, rows),
            "conflict": _ratio(counts["conflicting"], rows), "per_class": per_class,
            "functions": functions}
