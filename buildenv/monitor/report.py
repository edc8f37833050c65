"""Renderings of a drift result: text, JSON, SARIF and a self-contained HTML page.

Everything here reads only the result's public view (`DriftResult.stats`, already filtered for
restricted datasets) and its alerts, whose messages were built from that view; so no rendering
can show a row value that the statistics file does not. The HTML page has no scripts and no
network references: plots are inline SVG generated here.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import Diagnostic, to_sarif
from buildenv.monitor.alerts import Alert
from buildenv.monitor.comparison import Comparison
from buildenv.monitor.drift import DriftResult
from buildenv.monitor.formatting import (
    OTHER,
    decimals_for,
    fmt_number,
    fmt_share,
    fmt_stat,
    value_label,
)

__all__ = ["render", "render_html", "render_json", "render_sarif", "render_text", "write_html"]

BASE_COLOR = "#4c78a8"
CAND_COLOR = "#f58518"
TOP_VALUES = 12


def render(result: DriftResult, fmt: str = "text", show_all: bool = False,
           quiet: bool = False) -> str:
    if fmt == "json":
        return render_json(result, show_all)
    if fmt == "sarif":
        return render_sarif(result, show_all)
    return render_text(result, show_all, quiet)


def _shown(result: DriftResult, show_all: bool) -> list[Alert]:
    return result.alerts if show_all else result.active


def _suppressed_line(result: DriftResult) -> str | None:
    hidden = result.suppressed
    if not hidden:
        return None
    reasons = []
    for reason, words in (("unimportant", "unimportant features"),
                          ("unused", "features no model takes as input")):
        cols = sorted({a.column for a in hidden if a.suppressed == reason})
        if cols:
            reasons.append(f"{words} ({', '.join(cols)})")
    n = len(hidden)
    return (f"{n} alert{'s' if n != 1 else ''} suppressed: {' and '.join(reasons)}; "
            "--all shows them")


def render_text(result: DriftResult, show_all: bool = False, quiet: bool = False) -> str:
    """The report; `quiet` (--quiet): errors, active alerts and the count line only."""
    if quiet:
        lines = [p.to_text() for p in result.problems if p.is_error]
        lines += [a.diagnostic().to_text() for a in result.active]
        return "\n".join(lines + [_count_line(result)])
    b, c = result.baseline, result.candidate
    words = result.comparison
    lines = [f"{words.kind} of {result.dataset} in {result.environment}"
             + (" (restricted: aggregates only)" if result.restricted else ""),
             f"  {words.baseline:<9}  {b.uri}  {(b.digest or '')[:19]}  {b.rows:,} rows",
             f"  {words.candidate:<9}  {c.uri}  {(c.digest or '')[:19]}  {c.rows:,} rows"]
    triage = result.triage
    if triage["enabled"]:
        lines.append(f"  models     {', '.join(triage['models'])}")
    else:
        lines.append(f"  note: {triage['note']}")
    for problem in result.problems:
        lines.append(problem.to_text())
    for alert in _shown(result, show_all):
        lines.append(alert.diagnostic().to_text())
    lines.append(_count_line(result))
    line = _suppressed_line(result)
    if line and not show_all:
        lines.append(line)
    elif line:
        lines.append(line.split(";")[0] + " (shown above as notes)")
    if result.stats_path is not None:
        lines.append(f"statistics: {result.stats.get('statistics_file', result.stats_path)}")
    return "\n".join(lines)


def _count_line(result: DriftResult) -> str:
    active = len(result.active)
    compared = len(result.stats["columns"])
    if active:
        return f"{active} alert{'s' if active != 1 else ''} on {compared} columns compared"
    return f"no {result.comparison.kind} beyond the thresholds ({compared} columns compared)"


def render_json(result: DriftResult, show_all: bool = False) -> str:
    shown = _shown(result, show_all)
    by_reason: dict[str, int] = {}
    for a in result.suppressed:
        by_reason[a.suppressed or ""] = by_reason.get(a.suppressed or "", 0) + 1
    payload = {
        "environment": result.environment, "dataset": result.dataset,
        "comparison": result.comparison.kind,
        "baseline": result.baseline.describe(), "candidate": result.candidate.describe(),
        "diagnostics": [d.to_json() for d in
                        [*result.problems, *(a.diagnostic() for a in shown)]],
        "alerts": [a.to_json() for a in shown],
        "suppressed": {"count": len(result.suppressed), "by_reason": by_reason},
        "triage": result.triage,
        "statistics": result.stats.get("statistics_file"),
        "exit_code": result.exit_code,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False, default=_default)


def render_sarif(result: DriftResult, show_all: bool = False) -> str:
    shown = _shown(result, show_all)
    diagnostics: list[Diagnostic] = [*result.problems, *(a.diagnostic() for a in shown)]
    sarif = to_sarif(diagnostics)
    results = sarif["runs"][0]["results"]
    for item, alert in zip(results[len(result.problems):], shown):
        item["properties"] = {k: v for k, v in alert.to_json().items()
                              if k not in ("message", "hints")}
        if alert.suppressed:
            item["suppressions"] = [{"kind": "external", "status": "accepted",
                                     "justification": alert.suppressed_why}]
    return json.dumps(sarif, indent=2, ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2330;
background:#fff;max-width:1240px}
h1{font-size:22px;margin:0 0 4px}h1 code,h3 code{font-size:inherit}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;
padding-bottom:4px}h3{font-size:15px;margin:0 0 6px}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px 3px 0;text-align:left;
vertical-align:top}th{color:#556;font-weight:600}
.alert{border-left:5px solid #c0392b;background:#fdf1ef;padding:8px 12px;margin:8px 0;
border-radius:3px}.alert.suppressed{border-color:#999;background:#f4f4f6}
.alert .where{color:#667;font-size:12px}.alert .hint{color:#334;font-size:13px;margin-left:14px}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:11.5px;margin-left:6px;
background:#e8ecf4;color:#334}.badge.bad{background:#c0392b;color:#fff}
.column{border:1px solid #e3e6ee;border-radius:6px;padding:12px 14px;margin:14px 0}
.grid{display:flex;gap:22px;flex-wrap:wrap;align-items:flex-start}
.grid>div{flex:0 1 auto;min-width:0}
.legend span{display:inline-block;width:11px;height:11px;margin:0 4px 0 12px;
vertical-align:middle}
.ok{color:#2d7d46}.crossed{color:#c0392b;font-weight:600}.muted{color:#778}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(result: DriftResult) -> str:
    stats = result.stats
    b, c = result.baseline, result.candidate
    words = result.comparison
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{words.kind}: {_e(result.dataset)} in {_e(result.environment)}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{words.kind.capitalize()} of <code>{_e(result.dataset)}</code> in "
           f"<code>{_e(result.environment)}</code></h1>"]
    if result.restricted:
        out.append(f'<p class="muted">Restricted dataset: aggregates only; values seen fewer '
                   f'than {stats["min_group_size"]} times are merged into "{OTHER}".</p>')
    out.append("<table>")
    for label, src in ((words.baseline, b), (words.candidate, c)):
        out.append(f"<tr><th>{label}</th><td class=mono>{_e(src.uri)}</td>"
                   f"<td class=mono>{_e((src.digest or '')[:19])}</td><td>{src.rows:,} rows</td>"
                   f"<td class=muted>{_e(src.origin)}</td></tr>")
    triage = result.triage
    models = ", ".join(triage["models"]) if triage["enabled"] else triage["note"]
    out.append(f"<tr><th>models</th><td colspan=4>{_e(models)}</td></tr></table>")
    out.append(f'<div class="legend">colours:<span style="background:{BASE_COLOR}"></span>'
               f'{words.baseline}<span style="background:{CAND_COLOR}"></span>'
               f'{words.candidate}</div>')
    out.append(f"<h2>Alerts ({len(result.active)})</h2>")
    if not result.active:
        out.append(f'<p class="ok">No {words.kind} beyond the thresholds.</p>')
    for problem in result.problems:
        out.append(_alert_html(problem, None))
    for alert in result.active:
        out.append(_alert_html(alert.diagnostic(), alert))
    if result.suppressed:
        out.append(f"<details><summary>{len(result.suppressed)} suppressed (unimportant "
                   "features or features no model takes as input)</summary>")
        for alert in result.suppressed:
            out.append(_alert_html(alert.diagnostic(), alert))
        out.append("</details>")
    out.append("<h2>Columns</h2>")
    alerted = {a.column: i for i, a in reversed(list(enumerate(result.active)))}
    order = sorted(stats["columns"], key=lambda n: (alerted.get(n, len(alerted)),
                                                    -(stats["columns"][n]["importance"] or 0), n))
    for name in order:
        out.append(_column_html(name, stats["columns"][name], name in alerted, words))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _alert_html(d: Diagnostic, alert: Alert | None) -> str:
    cls = "alert suppressed" if alert is not None and alert.suppressed else "alert"
    hints = "".join(f'<div class="hint">→ {_e(h)}</div>' for h in d.hints)
    return (f'<div class="{cls}"><div><b>{_e(d.code)}</b> {_e(d.message)}</div>'
            f'<div class="where">{_e(d.location())}</div>{hints}</div>')


def _column_html(name: str, col: dict, alerted: bool, words: Comparison) -> str:
    badges = [f'<span class="badge">{_e(col["kind"])} · {_e(col["dtype"])}</span>']
    if any(u.endswith("(the label)") for u in col["used_by"]):
        badges.append('<span class="badge">label</span>')
    elif col["importance"] is not None:
        badges.append(f'<span class="badge">importance {col["importance"]:.2f}</span>')
    elif not col["used_by"]:
        badges.append('<span class="badge">not a model input</span>')
    if alerted:
        badges.append('<span class="badge bad">alert</span>')
    parts = [f'<div class="column" id="col-{_e(name)}"><h3><code>{_e(name)}</code>'
             f'{"".join(badges)}</h3>']
    if col["used_by"]:
        parts.append(f'<div class="muted">used by {_e("; ".join(col["used_by"]))}</div>')
    parts.append('<div class="grid">')
    plot = _numeric_svg(col, words) if col["kind"] == "numeric" else _categorical_svg(col, words)
    parts.append(f"<div>{plot}</div>")
    parts.append(f"<div>{_metrics_table(col)}{_stats_table(col, words)}</div>")
    parts.append("</div></div>")
    return "".join(parts)


def _metrics_table(col: dict) -> str:
    rows = ["<table><tr><th>statistic</th><th>value</th><th>threshold</th><th>from</th></tr>"]
    names = {"linf": "L∞", "jsd": "JSD (log2)", "psi": "PSI", "null_fraction": "Δ null fraction",
             "mismatch": "differing values"}
    for stat, label in names.items():
        if stat not in col["metrics"]:  # mismatch: only with skew --key
            continue
        value = col["metrics"].get(stat)
        thr = col["thresholds"].get(stat)
        value_s = fmt_stat(value, thr["value"] if thr else None) if value is not None else "n/a"
        cls = "crossed" if thr and thr["crossed"] else ""
        thr_s = fmt_stat(thr["value"]) if thr else "—"
        src = (f'{_e(thr["key"])}<br><span class=muted>{_e(thr["location"] or "")}</span>'
               if thr else "")
        rows.append(f'<tr><td>{label}</td><td class="{cls}">{value_s}</td><td>{thr_s}</td>'
                    f"<td class=mono>{src}</td></tr>")
    at = col["metrics"].get("linf_at")
    if at is not None:
        rows.append(f"<tr><td colspan=4 class=muted>largest change at "
                    f"{_e(value_label(at) if col['kind'] == 'categorical' else at)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _stats_table(col: dict, words: Comparison) -> str:
    b, c = col["baseline"], col["candidate"]
    dtype = col["dtype"]
    rows = [("rows", f"{b['rows']:,}", f"{c['rows']:,}"),
            ("null fraction", _share(b["null_fraction"]), _share(c["null_fraction"]))]
    if col["kind"] == "numeric":
        pairs = [(k, b.get(k), c.get(k)) for k in ("mean", "std", "min", "max")
                 if k in b or k in c]
        pairs += [(q, v, c.get("quantiles", {}).get(q)) for q, v in b.get("quantiles", {}).items()]
        for key, old, new in pairs:
            places = decimals_for(*(v for v in (old, new) if v is not None))
            kind = "float64" if key == "std" else dtype
            rows.append((key, fmt_number(old, kind, places), fmt_number(new, kind, places)))
    else:
        rows.append(("distinct", f"{b['distinct']:,}", f"{c['distinct']:,}"))
        rows.append(("mode", _mode(b), _mode(c)))
    body = "".join(f"<tr><td>{_e(k)}</td><td class=mono>{_e(x)}</td><td class=mono>{_e(y)}</td>"
                   "</tr>" for k, x, y in rows)
    return (f"<table><tr><th></th><th>{words.baseline}</th><th>{words.candidate}</th></tr>"
            f"{body}</table>")


def _share(value: float | None) -> str:
    return fmt_share(value) if value is not None else "n/a"


def _mode(side: dict) -> str:
    if side.get("mode") is None:
        return "n/a"
    return f"{value_label(side['mode'])} ({_share(side['mode_fraction'])})"


def _svg_open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
            'font-family="system-ui,sans-serif" font-size="11">')


def _numeric_svg(col: dict, words: Comparison) -> str:
    b, c = col["baseline"]["histogram"], col["candidate"]["histogram"]
    labels = b["labels"]
    pb = [f or 0.0 for f in b["fractions"]]
    pc_ = [f or 0.0 for f in c["fractions"]]
    n = len(labels)
    width, height, left, bottom, top = 480, 250, 44, 86, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(pb + pc_ + [1e-9])
    group = plot_w / max(n, 1)
    bar = max(2.0, group * 0.38)
    parts = [_svg_open(width, height, f"distribution of {col['dtype']} column")]
    parts.extend(_y_axis(left, top, plot_w, plot_h, peak))
    for i, label in enumerate(labels):
        x0 = left + i * group + group / 2 - bar
        for j, (frac, color) in enumerate(((pb[i], BASE_COLOR), (pc_[i], CAND_COLOR))):
            h = plot_h * frac / peak
            shown = "fewer than the minimum group size" if (
                (b if j == 0 else c)["fractions"][i] is None) else fmt_share(frac)
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar - 1:.1f}" height="{max(h, 0.0):.1f}" fill="{color}">'
                         f"<title>{_e(label)}: "
                         f"{words.baseline if j == 0 else words.candidate} "
                         f"{_e(shown)}</title></rect>")
        tx, ty = left + i * group + group / 2, top + plot_h + 10
        parts.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="end" '
                     f'transform="rotate(-35 {tx:.1f} {ty:.1f})">{_e(_clip(label, 26))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(left: float, top: float, plot_w: float, plot_h: float, peak: float) -> list[str]:
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             'stroke="#889"/>']
    for k in range(5):
        frac = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     'stroke="#eef"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{frac * 100:.0f}%</text>")
    return parts


def _categorical_svg(col: dict, words: Comparison) -> str:
    b, c = col["baseline"], col["candidate"]
    shares: dict[Any, list[float]] = {}
    keys: dict[str, Any] = {}
    for j, side in enumerate((b, c)):
        for item in side["values"]:
            k = json.dumps(item["value"])
            keys[k] = item["value"]
            shares.setdefault(k, [0.0, 0.0])[j] = item["fraction"] or 0.0
    ranked = sorted(shares, key=lambda k: -max(shares[k]))
    top, rest = ranked[:TOP_VALUES], ranked[TOP_VALUES:]
    rows = [(value_label(keys[k]), shares[k][0], shares[k][1]) for k in top]
    if rest:
        rows.append((f"{len(rest)} more values", sum(shares[k][0] for k in rest),
                     sum(shares[k][1] for k in rest)))
    if b.get("other") or c.get("other"):
        rows.append((OTHER, (b.get("other") or {}).get("fraction") or 0.0,
                     (c.get("other") or {}).get("fraction") or 0.0))
    row_h, left, width = 26, 140, 480
    height = max(len(rows), 1) * row_h + 14
    plot_w = width - left - 110
    peak = max([max(x, y) for _, x, y in rows] + [1e-9])
    parts = [_svg_open(width, height, "value frequencies")]
    for i, (label, x, y) in enumerate(rows):
        y0 = 8 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y0 + 15}" text-anchor="end">'
                     f"{_e(_clip(label, 22))}</text>")
        for j, (frac, color) in enumerate(((x, BASE_COLOR), (y, CAND_COLOR))):
            w = plot_w * frac / peak
            parts.append(f'<rect x="{left}" y="{y0 + j * 10 + 2}" width="{max(w, 0.0):.1f}" '
                         f'height="9" fill="{color}"><title>{_e(label)}: '
                         f"{words.baseline if j == 0 else words.candidate} "
                         f"{fmt_share(frac)}</title></rect>")
        parts.append(f'<text x="{left + plot_w * max(x, y) / peak + 4:.1f}" y="{y0 + 15}" '
                     f'fill="#556">{fmt_share(x)} → {fmt_share(y)}</text>')
    parts.append(f'<line x1="{left}" y1="4" x2="{left}" y2="{height - 6}" stroke="#889"/>')
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def write_html(result: DriftResult, path: Path) -> None:
    atomic_write_text(path, render_html(result))
