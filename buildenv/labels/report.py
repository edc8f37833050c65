"""`buildenv labels ENV`: what each label set of an environment holds, and how it resolves.

Per label set: the export (uri, digest, taxonomy, UI version), examples, annotations and
annotators (with cancelled and empty annotations), annotations per class, per annotator and per
UI version, inter-annotator agreement (`agreement`), and the resolution: examples labeled by
this set, tied, taken from each reused set and needing relabeling per class. Every number is a
count: nothing of an example's data is shown, so the report is the same for restricted
datasets -- except a set computed by labeling functions over one: its counts are the functions'
figures, shown only as the privacy policy releases them. The checks of `checks.check_labels`
run too, and their problems are listed.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.staleness import check_lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.labels.agreement import agreement
from buildenv.labels.checks import check_labels
from buildenv.labels.labelset import LabelError, LabelSets

__all__ = ["label_report", "render_text"]


def _counts(array: Any) -> dict[str, int]:
    if not len(array):
        return {}
    vc = pc.value_counts(array)
    pairs = zip(vc.field(0).to_pylist(), vc.field(1).to_pylist())
    return dict(sorted(((str(k), int(v)) for k, v in pairs), key=lambda kv: (-kv[1], kv[0])))


def label_report(project: Project, multiverse: Multiverse, res: Resolved,
                 computed: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The report (JSON-ready) and the problems found; DiagnosticError when the environment's
    lock does not pin its label sets. `computed`: the figures of label sets computed by
    labeling functions, as they may be shown (`compile.label_analysis`)."""
    if not res.env.labels:
        raise DiagnosticError([res.diag("BE851", f"environment {res.name} declares no label "
                                        "sets", "name",
                                        hints=("declare them under `labels:` "
                                               "(docs/labels.md)",))], 2)
    lock, problems = check_lock(multiverse, res)
    if lock is None:
        raise DiagnosticError(problems, 1)
    pins = {name: d.digest for name, d in lock.datasets.items()}
    gate = Gate(project, res.env, "labels", pins=pins, where=res)
    sets = LabelSets(gate, lock.label_pins(), res)
    problems = [p for p in problems if not p.is_error]
    problems += check_labels(project, multiverse, res, lock, purpose="labels", sets=sets)
    out = []
    for name, spec in res.env.labels.items():
        entry = lock.labels[name]
        item: dict[str, Any] = {
            "name": name, "uri": spec.uri, "format": spec.format, "digest": entry.digest,
            "dataset": spec.dataset, "key": spec.key,
            "taxonomy": {"name": spec.taxonomy.name, "version": spec.taxonomy.version,
                         "classes": list(spec.taxonomy.classes)},
            "ui_version": spec.ui_version, "exposure": spec.exposure,
            "reuse": [{"labels": e.labels, "mapping": e.mapping, "ambiguous": e.ambiguous}
                      for e in spec.reuse],
            "label": res.env.label is not None and res.env.label.labels == name}
        if spec.source is not None and computed is not None and name in computed:
            item["functions"] = computed[name]
        try:
            ann = sets.file(name).annotations
            resolution = sets.resolve(name)
        except LabelError:
            item["error"] = "cannot be read or resolved (see the problems)"
            out.append(item)
            continue
        summary = resolution.summary()
        if res.env.computed_over_restricted(name) is not None:
            # the functions' figures (its own or a reused set's) are these counts as the
            # privacy policy releases them (withheld when small, noised under `release: dp`):
            # not shown exactly here
            item.update({key: None for key in _COUNTED})
            item["counts_withheld"] = "the dataset is restricted"
            out.append(item)
            continue
        item.update({
            "tasks": ann.tasks, "examples": ann.examples, "annotations": len(ann),
            "annotators": ann.annotator_count, "cancelled": ann.cancelled, "empty": ann.empty,
            "per_annotator": _counts(ann.annotators),
            "per_ui_version": _counts(ann.ui_versions.fill_null("(unknown)")),
            "annotations_per_class": _counts(ann.labels),
            "agreement": agreement(ann),
            "resolved": {"examples": summary["examples"], "own": summary["own"],
                         "tied": summary["tied"], "from_reuse": summary["from_reuse"],
                         "reused": summary["reused"],
                         "reused_by_mapping": summary["reused_by_mapping"],
                         "needs_relabel": summary["needs_relabel"],
                         "relabel": summary["relabel"], "per_class": summary["per_class"]}})
        out.append(item)
    return {"environment": res.name, "label_sets": out}, problems


# what the report counts per label set (`counts_withheld`: all None)
_COUNTED = ("tasks", "examples", "annotations", "annotators", "cancelled", "empty",
            "per_annotator", "per_ui_version", "annotations_per_class", "agreement", "resolved")


def _share(n: int, total: int) -> str:
    return f"{n:,} ({n / total:.1%})" if total else f"{n:,}"


def render_text(report: dict[str, Any]) -> str:
    lines = [f"label sets of {report['environment']}"]
    for item in report["label_sets"]:
        tax = item["taxonomy"]
        head = (f"\n{item['name']}{'  (the label)' if item['label'] else ''}: {item['uri']} "
                f"({item['format']}) {item['digest'][:19]}")
        lines.append(head)
        lines.append(f"  taxonomy {tax['name']} v{tax['version']} ({len(tax['classes'])} "
                     f"classes), UI version {item['ui_version'] or '-'}, labels "
                     f"{item['dataset']}.{item['key']}, exposure {item['exposure']}")
        if "error" in item:
            lines.append(f"  {item['error']}")
            continue
        if "functions" in item:
            lines.extend(_function_lines(item["functions"]))
        if item.get("counts_withheld"):
            lines.append(f"  exact counts withheld: {item['counts_withheld']} (the figures above "
                         "follow the privacy policy)")
            continue
        lines.append(f"  examples {item['examples']:,}   annotations {item['annotations']:,}   "
                     f"annotators {item['annotators']:,}   cancelled {item['cancelled']:,}   "
                     f"without a choice {item['empty']:,}")
        r = item["resolved"]
        lines.append(f"  resolved {r['examples']:,} examples: {r['own']:,} by this set's "
                     f"majority, {r['tied']:,} tied (no label), {r['from_reuse']:,} from reuse")
        for other, n in r["reused"].items():
            kinds = ", ".join(f"{k} {v:,}" for k, v in
                              sorted(r["reused_by_mapping"].get(other, {}).items()))
            lines.append(f"    from {other}: {n:,}" + (f" ({kinds})" if kinds else ""))
        if r["needs_relabel"]:
            for other, classes in r["relabel"].items():
                lines.append(f"    need relabeling (from {other}): "
                             + ", ".join(f"{c} {n:,}" for c, n in classes.items()))
        total = r["examples"]
        lines.append("  per class: " + ", ".join(f"{c} {_share(n, total)}"
                                                 for c, n in r["per_class"].items()))
        lines += _table(("annotator", "annotations"), item["per_annotator"])
        lines += _table(("UI version", "annotations"), item["per_ui_version"])
        ag = item["agreement"]
        if ag["examples"]:
            fleiss = "n/a" if ag["fleiss_kappa"] is None else f"{ag['fleiss_kappa']:.3f}"
            cohen = "n/a" if ag["cohen_kappa"] is None else f"{ag['cohen_kappa']:.3f}"
            lines.append(f"  agreement: Fleiss' kappa {fleiss} over {ag['examples']:,} examples "
                         f"with 2+ annotators; Cohen's kappa {cohen} (mean of {ag['pairs']} "
                         "annotator pair(s))")
        else:
            lines.append("  agreement: n/a (no example has 2+ annotators)")
    return "\n".join(lines)


def _table(headers: tuple[str, str], counts: dict[str, int]) -> list[str]:
    """Names and counts as two columns: `102  690` on one line reads as one number."""
    rows = [(str(k), f"{n:,}") for k, n in counts.items()]
    left = max([len(headers[0])] + [len(k) for k, _ in rows])
    right = max([len(headers[1])] + [len(n) for _, n in rows])
    return [f"  {headers[0].ljust(left)}  {headers[1].rjust(right)}"] + [
        f"  {k.ljust(left)}  {n.rjust(right)}" for k, n in rows]
def _rows(value: int | None) -> str:
    """None: the rows of an output computed over restricted data, withheld by the policy."""
    return "withheld" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return "withheld" if value is None else f"{value:.1%}"


def _function_lines(found: dict[str, Any]) -> list[str]:
    """A computed label set: its functions' coverage, overlaps, conflicts and accuracy."""
    release = found["release"]
    lines = [f"  labeling functions {found['module']} (model {found['model']}"
             + (f", gold {found['gold']}" if found.get("gold") else "") + ")"
             + ("" if release["policy"] == "public" else
                f"; figures released {release['policy']}"
                + (f" (epsilon {release['epsilon_spent']:g})"
                   if release["policy"] == "dp" else "")),
             f"  coverage {_rate(found['coverage'])} of {_rows(found['rows'])} rows, conflicts "
             f"{_rate(found['conflict'])}"]
    header = ["function", "coverage", "overlaps", "conflicts", "accuracy"]
    rows = [header]
    # "-": no gold row to judge by; over restricted data a small count is withheld instead
    judged = found.get("gold") and release["policy"] != "public"
    for name, f in found["functions"].items():
        accuracy = "-" if f["accuracy"] is None and f["judged_rows"] is None and not judged \
            else (
            _rate(f["accuracy"]) + (f" of {f['judged_rows']:,}" if f["judged_rows"] else ""))
        if f.get("estimated_accuracy") is not None:
            accuracy += f" (model {f['estimated_accuracy']:.1%})"
        rows.append([name, _rate(f["coverage"]), _rate(f["overlaps"]), _rate(f["conflicts"]),
                     accuracy])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("  class shares: " + ", ".join(f"{c} {_rate(v)}"
                                                for c, v in found["per_class"].items()))
    return lines


def render_json(report: dict[str, Any], problems: list[Diagnostic]) -> str:
    return json.dumps({**report, "diagnostics": [p.to_json() for p in problems]}, indent=2)
