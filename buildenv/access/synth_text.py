"""The text rendering of a `buildenv synth` report (JSON is the report itself)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_synth"]


def render_synth(report: dict[str, Any]) -> str:
    budget = report["budget"]
    lines = [
        f"{report['file']}: {report['rows']:,} synthetic rows of {report['dataset']} "
        f"({report['method'].upper()}, epsilon {report['epsilon']:g}, seed {report['seed']})",
        f"budget of '{budget['scope']}': {budget['total']:g}, {budget['spent']:.6g} spent, "
        f"{budget['left']:.6g} left",
        f"environment {report['derived_environment']}: extends {report['environment']}, "
        f"'{report['dataset']}' is synthetic and not restricted there; locked",
    ]
    for name, how in report.get("identifiers", {}).items():
        lines.append(f"identifier {name}: {how}")
    lines.append("")
    lines.append("fidelity: synthetic marginal vs the privately released one")
    rows = [("column", "kind", "L-inf", "JSD", "95% accuracy")]
    for col in report["columns"]:
        rows.append((col["name"], col["kind"], f"{col['linf']:.4f}", f"{col['jsd']:.4f}",
                     f"±{col['accuracy']:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    pair = report.get("pair")
    if pair:
        a, b = pair["columns"]
        mi = pair["mutual_information"]
        lines.append(f"pair {a} x {b}: L-inf {pair['linf']:.4f}, JSD {pair['jsd']:.4f}; mutual "
                     f"information {mi['synthetic']:.4f} bits synthetic vs "
                     f"{mi['private_model']:.4f} private model ("
                     + ("measured directly by MST)" if pair["measured_directly"]
                        else "not selected by MST: the model infers it)"))
    lines.append("")
    lines.append(f"next: buildenv build TRAINING --env {report['derived_environment']}")
    return "\n".join(lines)
