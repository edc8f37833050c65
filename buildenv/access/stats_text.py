"""The text rendering of a `buildenv stats` report (JSON is the report itself)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_stats"]


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _pm(figure: dict[str, Any], private: bool, key: str = "value") -> str:
    text = _n(figure[key])
    return f"{text} ± {_n(round(figure['accuracy']))}" if private else text


def render_stats(report: dict[str, Any]) -> str:
    private = report["private"]
    head = f"{report['dataset']} @ {report['environment']} ({(report.get('digest') or '')[:19]})"
    lines = [head]
    if private:
        budget = report.get("budget", {})
        lines.append(f"differentially private: epsilon {report['epsilon']:g} spent by this call"
                     + (f", delta {report['delta']:.0e}" if report.get("delta") else "")
                     + f"; budget of '{budget.get('scope')}': {budget.get('total', 0):g}, "
                     f"{budget.get('spent', 0):.6g} spent, {budget.get('left', 0):.6g} left")
        lines.append("every figure: value ± half-width of its 95% interval (intervals of "
                     "means and quartiles in brackets); new noise on every call")
        if report.get("person_key"):
            lines.append(f"one person = one {report['person_key']}, at most "
                         f"{report['rows_per_person']} rows each")
    else:
        lines.append("public dataset: exact figures")
    lines.append(f"rows  {_pm(report['rows'], private)}")
    for col in report["columns"]:
        lines.append("")
        lines.append(_column_head(col))
        if col["kind"] == "keys":
            values = col["values"]
            for item in values:
                lines.append(f"  {_n(item['value'])}  {_pm(item, private, 'count')}")
            if not values:
                lines.append("  (no value cleared the threshold)" if private else "  (no value)")
            if col.get("distinct") is not None:
                lines.append(f"  {col['distinct']:,} distinct values")
            continue
        lines.append(f"  count  {_pm(col['count'], private)}")
        lines.append(f"  nulls  {_pm(col['nulls'], private)}")
        if col["kind"] == "binned":
            mean = col["mean"]
            lo, hi = mean["interval"]
            lines.append(f"  mean  {_n(mean['value'])} [{_n(lo)}, {_n(hi)}]")
            quartiles = "; ".join(
                f"{name} {_n(q['value'])} [{_n(q['interval'][0])}, {_n(q['interval'][1])}]"
                for name, q in col["quantiles"].items())
            lines.append(f"  quartiles  {quartiles}")
            for cell in col["histogram"]:
                lines.append(f"  {cell['bin']}  {_pm(cell, private, 'count')}")
        elif col["kind"] == "categorical":
            for cell in col["histogram"]:
                lines.append(f"  {cell['value']}  {_pm(cell, private, 'count')}")
            lines.append(f"  {col['outside_domain']['label']}  "
                         f"{_pm(col['outside_domain'], private)}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(_align(lines))


def _column_head(col: dict[str, Any]) -> str:
    kind = col["kind"]
    if kind == "binned":
        lo, hi = col["range"]
        return f"{col['name']}  {col['dtype']}, range [{_n(lo)}, {_n(hi)}]"
    if kind == "categorical":
        return f"{col['name']}  {col['dtype']}, domain of {len(col['domain'])} values"
    if kind == "keys":
        if col.get("threshold") is not None:
            return (f"{col['name']}  {col['dtype']}, no domain: values whose noisy count "
                    f"clears {col['threshold']:,}")
        return f"{col['name']}  {col['dtype']}, no domain: most frequent values"
    return f"{col['name']}  {col['dtype']}, no range: null count only"


def _align(lines: list[str]) -> list[str]:
    """Right-align the figure after the two-space gap of indented lines."""
    rows = [line.split("  ", 2) if line.startswith("  ") and line.count("  ") >= 2 else None
            for line in lines]
    width = max((len(r[1]) for r in rows if r is not None), default=0)
    out = []
    for line, row in zip(lines, rows):
        out.append(line if row is None else f"  {row[1].ljust(width)}  {row[2]}")
    return out
