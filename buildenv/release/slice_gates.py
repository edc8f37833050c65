"""Gates on evaluation slices: no slice may regress, and the slices may not spread apart.

Candidate and champion are scored on the same evaluation rows and resampled with the same
bootstrap weights (`training.slice_scores`), so each resample gives a paired difference on every
slice. A slice fails `promotion.slices.max_regression` when the candidate is worse than the
champion by more than it with the declared confidence: for each gated slice (at least its
`min_rows` rows, the metric defined for both models) the bootstrap p-value of "worse by no more
than max_regression" is the share of resamples where the candidate is worse by at most that
(plus one, over resamples plus one), and Holm's step-down procedure at 1 - confidence decides
which slices fail, so the chance that any slice fails by chance stays below 1 - confidence
however many slices there are. `max_gap` bounds the spread of the candidate's metric between
its best and worst gated slice (point estimates). Decisions use exact figures; what is shown
follows the privacy policy (restricted rows: slices below `min_group_size` are not named and
their figures not shown; with `privacy.release: dp` no exact slice figure is shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from buildenv.env.spec import Environment
from buildenv.training.slice_scores import SliceScores

__all__ = ["SliceRow", "SliceVerdict", "holm", "judge_slices", "render_rows", "slice_text",
           "verdict_gates"]


@dataclass
class SliceRow:
    """One slice of the comparison, as it may be shown (`shown` False: withheld)."""

    name: str
    rows: int | None
    status: str  # gated | too_small | undefined | withheld
    candidate: float | None = None
    champion: float | None = None
    difference: float | None = None  # candidate - champion
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    failed: bool = False
    shown: bool = True
    figures: bool = True  # False under privacy.release dp: verdicts only

    def to_json(self) -> dict[str, Any]:
        if not self.shown:
            return {"name": None, "status": "withheld", "failed": self.failed}
        out: dict[str, Any] = {"name": self.name, "status": self.status, "failed": self.failed}
        if self.figures:
            out.update({"rows": self.rows, "candidate": _round(self.candidate),
                        "champion": _round(self.champion),
                        "difference": _round(self.difference),
                        "interval": [_round(v) for v in self.interval] if self.interval
                        else None, "p_value": _round(self.p_value)})
        return out


@dataclass
class SliceVerdict:
    rows: list[SliceRow] = field(default_factory=list)
    regressed: list[SliceRow] = field(default_factory=list)
    gap: float | None = None
    gap_between: tuple[SliceRow, SliceRow] | None = None
    gated: int = 0


def judge_slices(scores: SliceScores, kind: str, env: Environment, restricted: bool,
                 with_champion: bool, direction: str) -> SliceVerdict:
    """Compare model 0 (candidate) with model 1 (champion, when `with_champion`) on every
    slice of `scores` on metric `kind`, and apply `promotion.slices`."""
    gates = env.promotion.slices if env.promotion is not None else None
    sense = 1.0 if direction == "maximize" else -1.0
    dp = restricted and env.privacy.release == "dp"
    min_group = env.privacy.min_group_size
    cand = scores.resampled.point[0].get(kind)
    champ = scores.resampled.point[1].get(kind) if with_champion else None
    verdict = SliceVerdict()
    worse: dict[int, np.ndarray] = {}
    if with_champion and cand is not None and champ is not None:
        worse_draws = sense * (scores.resampled.draws[1][kind] - scores.resampled.draws[0][kind])
    else:
        worse_draws = None
    alpha = 1.0 - (gates.confidence if gates is not None else scores.confidence)
    for family, code, index in scores.positions()[1:]:
        rows = int(scores.rows[index])
        shown = not (restricted and rows < min_group) or family.public[code]
        row = SliceRow(family.names[code], rows, "gated", shown=shown, figures=not dp and not (
            restricted and rows < min_group))
        row.candidate = _value(cand, index)
        row.champion = _value(champ, index) if champ is not None else None
        if rows < family.min_rows:
            row.status = "too_small"
        elif row.candidate is None or (with_champion and row.champion is None):
            row.status = "undefined"
        if row.candidate is not None and row.champion is not None:
            row.difference = row.candidate - row.champion
            if worse_draws is not None:
                diffs = -sense * worse_draws[:, index]
                finite = diffs[np.isfinite(diffs)]
                if len(finite) >= 0.9 * len(diffs):
                    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
                    row.interval = (float(low), float(high))
                    worse[index] = sense * -finite
        verdict.rows.append(row)
    gated = [(i, r) for i, r in zip(range(1, len(scores.names)), verdict.rows)
             if r.status == "gated"]
    verdict.gated = len(gated)
    if gates is not None and gates.max_regression is not None and worse_draws is not None:
        tested = [(i, r) for i, r in gated if i in worse]
        for i, r in tested:
            r.p_value = (1.0 + float(np.sum(worse[i] <= gates.max_regression + 1e-12))) \
                / (len(worse[i]) + 1.0)
        for r in holm([r for _, r in tested], alpha):
            r.failed = True
            verdict.regressed.append(r)
    if gates is not None and gates.max_gap is not None:
        valued = [r for _, r in gated if r.candidate is not None]
        if len(valued) >= 2:
            best = max(valued, key=lambda r: sense * r.candidate)  # type: ignore[operator]
            worst = min(valued, key=lambda r: sense * r.candidate)  # type: ignore[operator]
            verdict.gap = abs(best.candidate - worst.candidate)  # type: ignore[operator]
            verdict.gap_between = (best, worst)
    return verdict


def holm(rows: list[SliceRow], alpha: float) -> list[SliceRow]:
    """The slices Holm's step-down procedure rejects at level `alpha` (by their p-values)."""
    ranked = sorted(rows, key=lambda r: (r.p_value if r.p_value is not None else 1.0, r.name))
    rejected = []
    for k, r in enumerate(ranked):
        if r.p_value is None or r.p_value > alpha / (len(ranked) - k):
            break
        rejected.append(r)
    return rejected


def _value(values: np.ndarray | None, index: int) -> float | None:
    if values is None or not np.isfinite(values[index]):
        return None
    return float(values[index])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def slice_text(row: SliceRow, metric: str) -> str:
    """`carrier=UA: val_auc 0.7100 vs 0.7800, difference -0.0700 [-0.1000, -0.0400]`."""
    name = row.name if row.shown else "a slice (withheld: restricted rows)"
    if not row.figures:
        return f"{name}: {metric} figures withheld (restricted rows)"
    text = f"{name}: {metric} {_fmt(row.candidate)} vs {_fmt(row.champion)}"
    if row.difference is not None:
        text += f", difference {row.difference:+.4f}"
        if row.interval is not None:
            text += f" [{row.interval[0]:+.4f}, {row.interval[1]:+.4f}]"
    return text


def verdict_gates(verdict: SliceVerdict, env: Environment, metric: str, with_champion: bool
                  ) -> tuple[list[tuple[str, str, str, bool]], list[tuple[str, str, tuple]]]:
    """`promotion.slices` applied: gates as (name, limit, actual, passed), and failures as
    (code, message, YAML key path)."""
    gates = env.promotion.slices if env.promotion is not None else None
    if gates is None:
        return [], []
    out: list[tuple[str, str, str, bool]] = []
    found: list[tuple[str, str, tuple]] = []
    level = f"{gates.confidence:.0%}"
    if gates.max_regression is not None and with_champion:
        failed = verdict.regressed
        actual = (f"{len(failed)} of {verdict.gated} regressed" if failed
                  else f"none of {verdict.gated}")
        out.append(("slices.max_regression", f"<= {gates.max_regression:g} ({level}, Holm)",
                    actual, not failed))
        for row in failed:
            adjusted = f" (p = {row.p_value:.3g})" if row.figures and row.p_value else ""
            found.append(("BE510", f"{slice_text(row, metric)}: worse than the champion by more "
                          f"than promotion.slices.max_regression {gates.max_regression:g} with "
                          f"{level} confidence{adjusted}", ("promotion", "slices",
                                                            "max_regression")))
    if gates.max_gap is not None:
        ok = verdict.gap is None or verdict.gap <= gates.max_gap + 1e-12
        out.append(("slices.max_gap", f"<= {gates.max_gap:g}",
                    "n/a" if verdict.gap is None else f"{verdict.gap:.4f}", ok))
        if not ok and verdict.gap_between is not None:
            best, worst = verdict.gap_between
            if best.figures and worst.figures and best.shown and worst.shown:
                between = (f"between {best.name} ({_fmt(best.candidate)}) and {worst.name} "
                           f"({_fmt(worst.candidate)})")
            else:
                between = "between two slices (withheld: restricted rows)"
            found.append(("BE511", f"{metric} of the candidate spreads {verdict.gap:.4f} "
                          f"{between}, more than promotion.slices.max_gap {gates.max_gap:g}",
                          ("promotion", "slices", "max_gap")))
    return out, found


def render_rows(verdict: SliceVerdict, metric: str, with_champion: bool) -> list[str]:
    """The comparison table's slice rows."""
    head = ["slice", "rows", "candidate"] + (["champion", "difference"] if with_champion
                                             else []) + ["gate"]
    table = [head]
    withheld = 0
    for row in verdict.rows:
        if not row.shown:
            withheld += 1
            continue
        gate = {"gated": "FAIL" if row.failed else "pass" if row.p_value is not None else "-",
                "too_small": "too small", "undefined": "undefined"}[row.status]
        if not row.figures:
            cells = [row.name, "-", "withheld"] + (["withheld", "-"] if with_champion else [])
        else:
            cells = [row.name, f"{row.rows:,}", _fmt(row.candidate)]
            if with_champion:
                diff = "n/a" if row.difference is None else f"{row.difference:+.4f}"
                if row.interval is not None:
                    diff += f" [{row.interval[0]:+.4f}, {row.interval[1]:+.4f}]"
                cells += [_fmt(row.champion), diff]
        table.append(cells + [gate])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    if withheld:
        lines.append(f"({withheld} slice(s) withheld: fewer rows than privacy.min_group_size)")
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
