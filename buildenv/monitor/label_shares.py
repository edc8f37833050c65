"""Alerts when a class's share of the rows moves: the label's own drift check.

`label.coverage.max_share_change` bounds how far (absolute, 0..1) any class's share may move
between the locked data and new data. `drift` (of the label's dataset, or of a label set with
`--labels`) and `retrain` (which runs drift on changed datasets) report every class past it,
naming the class, both shares, and the most frequent class before and after. These alerts are
never suppressed by importance triage: the label is not a model input, but it is what every
model learns. Shares of restricted rows follow the drift report's rule: a class seen fewer than
`privacy.min_group_size` times is not given a share.
"""

from __future__ import annotations

from typing import Any

from buildenv.core.diagnostics import Diagnostic
from buildenv.env.evaluation_rules import label_class_keys
from buildenv.env.resolve import Resolved
from buildenv.env.spec import class_key
from buildenv.monitor.alerts import Alert
from buildenv.monitor.formatting import fmt_share

__all__ = ["share_alerts"]


def share_alerts(res: Resolved, label: str, old: dict[Any, int], new: dict[Any, int],
                 restricted: bool, accept: str) -> list[Alert]:
    """One alert per class whose share moved more than `label.coverage.max_share_change`;
    `old` and `new` are counts per label value (nulls left out)."""
    env = res.env
    coverage = env.label.coverage if env.label is not None else None
    if coverage is None:
        return []
    limit = coverage.max_share_change
    before, after = _keyed(old), _keyed(new)
    n_old, n_new = sum(before.values()), sum(after.values())
    if not n_old or not n_new:
        return []
    min_group = env.privacy.min_group_size
    classes = list(dict.fromkeys([*(label_class_keys(env) or []), *before, *after]))

    def share(counts: dict[str, int], total: int, name: str) -> str:
        count = counts.get(name, 0)
        if restricted and 0 < count < min_group:
            return f"fewer than {min_group} rows"
        return fmt_share(count / total)

    def mode(counts: dict[str, int], total: int) -> str:
        name = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        return f"'{name}' ({share(counts, total, name)})"

    where = res.diag("BE508", "", "label", "coverage", "max_share_change")
    alerts = []
    for name in classes:
        moved = after.get(name, 0) / n_new - before.get(name, 0) / n_old
        if abs(moved) <= limit + 1e-12:
            continue
        a, b = share(before, n_old, name), share(after, n_new, name)
        points = "" if "fewer" in a + b else f" ({moved * 100:+.1f} points)"
        message = (f"{label}: class '{name}' {'rose' if moved > 0 else 'fell'} {a} → {b}"
                   f"{points}, more than label.coverage.max_share_change {limit:g}; most "
                   f"frequent class {mode(before, n_old)} before, {mode(after, n_new)} after")
        alerts.append(Alert("BE508", label, "share", abs(moved), limit,
                            "label.coverage.max_share_change", a, b, message,
                            Diagnostic("BE508", "", where.path, where.line, where.col),
                            hints=(accept, "or allow it: raise label.coverage."
                                   "max_share_change")))
    return alerts


def _keyed(counts: dict[Any, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value, count in counts.items():
        if value is None:
            continue
        key = class_key(value)
        out[key] = out.get(key, 0) + int(count)
    return out
