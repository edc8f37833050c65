"""Numbers and values as drift messages show them: in the column's own units, never raw floats.

Numbers are formatted by what they mean. Counts of rows carry their unit and thousands
separators (`3,400 rows`); values of an integer column are written as the data holds them, with
no separator, because integer columns hold years, ids and codes (`2016`, not `2,016`); values of
a float column are measures and keep the separator (`43,000.5`)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from buildenv.monitor.statistics import EPOCH

__all__ = ["OTHER", "bin_label", "decimals_for", "fmt_delta", "fmt_number", "fmt_share", "fmt_stat",
           "suggest_threshold", "value_label"]

OTHER = "(other)"


def fmt_number(value: float | None, dtype: str = "float64", decimals: int | None = None) -> str:
    """A value in the column's own units: dates and times as ISO text, numbers with 4
    significant digits (or `decimals` places); thousands separators for float columns only."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if dtype == "date":
        return (EPOCH + dt.timedelta(days=round(value))).isoformat()
    if dtype == "timestamp":
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M") + "Z"
    group = "" if dtype.startswith(("int", "uint")) else ","
    if decimals is not None and abs(value) < 1e9:
        return f"{value:{group}.{decimals}f}"
    return _plain(value, group=group)


def decimals_for(*values: float) -> int:
    """Decimal places that show the largest of `values` with 4 significant digits."""
    peak = max((abs(v) for v in values if v), default=0.0)
    if peak == 0:
        return 0
    return min(6, max(0, 3 - math.floor(math.log10(peak))))


def _plain(value: float, digits: int = 4, group: str = ",") -> str:
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 9 or magnitude < -4:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:{group}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_delta(value: float, dtype: str, decimals: int | None = None) -> str:
    sign = "+" if value >= 0 else "-"
    size = abs(value)
    if dtype == "date":
        return f"{sign}{_plain(size, 3)} days"
    if dtype == "timestamp":
        for unit, seconds in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if size >= seconds:
                return f"{sign}{_plain(size / seconds, 3)} {unit}"
        return f"{sign}{_plain(size, 3)} s"
    return f"{sign}{fmt_number(size, dtype, decimals)}"


def percent(ratio: float) -> str:
    return f"{ratio * 100:+.1f}%" if abs(ratio) < 0.1 else f"{ratio * 100:+.0f}%"


def fmt_stat(value: float, against: float | None = None) -> str:
    """A statistic, with enough digits to differ visibly from `against` (the threshold)."""
    for digits in range(3, 8):
        text = f"{value:.{digits}g}"
        if against is None or float(text) != against:
            return text
    return repr(value)


def fmt_share(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'" if value != OTHER else OTHER
    return str(value)


def bin_label(i: int, edges: list[float], dtype: str) -> str:
    if not edges:
        return "all values"
    if i == 0:
        return f"< {fmt_number(edges[0], dtype)}"
    if i == len(edges):
        return f"≥ {fmt_number(edges[-1], dtype)}"
    return f"[{fmt_number(edges[i - 1], dtype)}, {fmt_number(edges[i], dtype)})"


def suggest_threshold(value: float, bounded: bool) -> float:
    """A round threshold just above an observed statistic."""
    if value <= 0:
        return 0.01
    step = 10 ** (math.floor(math.log10(value)) - 1)
    out = math.ceil(value / step) * step
    if out <= value:
        out += step
    out = float(f"{out:.6g}")
    return min(out, 1.0) if bounded else out

