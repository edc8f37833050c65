"""Alerts on feature-value skew (`buildenv skew --key`): the share of joined examples whose value
differs between training and serving, against `monitoring.skew`'s `mismatch` threshold.

Built from counts only; for unrestricted datasets the message shows one differing pair (its key,
the training value and the serving value), which is what makes the alert actionable.
"""

from __future__ import annotations

from buildenv.env.resolve import Multiverse, Resolved
from buildenv.monitor.alerts import Alert, ColumnView, Threshold, threshold_hint, threshold_text
from buildenv.monitor.feature_skew import Mismatches
from buildenv.monitor.formatting import fmt_share, value_label

__all__ = ["mismatch_alerts", "mismatch_view"]


def mismatch_view(joined: Mismatches, name: str) -> dict:
    """What the statistics file records of one column's join (counts only)."""
    differ = joined.differ.get(name, 0)
    return {"joined": joined.joined, "differ": differ,
            "fraction": differ / joined.joined if joined.joined else None}


def mismatch_alerts(v: ColumnView, joined: Mismatches, key: list[str], thr: Threshold | None,
                    res: Resolved, multiverse: Multiverse, accept: str) -> list[Alert]:
    """BE615 when more than the `mismatch` share of the joined examples differ."""
    differ = joined.differ.get(v.name, 0)
    if thr is None or not joined.joined:
        return []
    share = differ / joined.joined
    if share <= thr.value:
        return []
    message = (f"{v.label}: {differ:,} of {joined.joined:,} serving rows joined on "
               f"{', '.join(key)} ({fmt_share(share)}) have another value than the training "
               "row with the same key")
    example = joined.example.get(v.name)
    if example is not None and not v.restricted:
        at, trained, served = example
        message += (f"; e.g. {', '.join(key)} {value_label(at)}: {value_label(trained)} in "
                    f"training, {value_label(served)} at serving")
    message += f"; {threshold_text(res, thr, share, v.kind)}"
    hints = (f"the column is computed differently in production than in the training data: "
             f"compare the two pipelines for {v.name}", accept,
             threshold_hint(res, multiverse, thr, share, v.name, "skew"))
    return [Alert("BE615", v.name, "mismatch", share, thr.value,
                  thr.key if thr.written else None, "training value", "serving value", message,
                  res.diag("BE615", "", *thr.path), hints=hints)]
