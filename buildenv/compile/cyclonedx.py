"""The model card for machines: a CycloneDX 1.6 ML-BOM (`model_card.json`).

The BOM holds the model as a `machine-learning-model` component with its `modelCard`
(parameters, quantitative analysis with one performance metric per metric and slice and its
confidence interval, considerations), and each dataset and label set it was trained and
evaluated on as a `data` component with its content digest; `dependencies` link the model to
them. Everything else buildenv records (environment chain, serving stack and operators,
coverage, importance, privacy) is in `properties` under the `buildenv:` namespace. Written by
hand (plain JSON, keys sorted): generating it needs no library; the tests validate it against
the official schema that cyclonedx-python-lib ships. `serialNumber` is derived from the build's
cache key and `timestamp` from SOURCE_DATE_EPOCH, so identical builds give identical bytes.
"""

from __future__ import annotations

import json
from typing import Any

from buildenv import __version__

__all__ = ["cyclonedx_card", "promotion_properties"]

_HASHES = {"sha256": "SHA-256", "blake3": "BLAKE3"}


def cyclonedx_card(facts: dict[str, Any], serial: str, timestamp: str) -> dict[str, Any]:
    data = [_dataset(name, d) for name, d in facts["datasets"].items()]
    data += [_label_set(name, s) for name, s in facts["labels"].items()]
    text = facts["text"]
    considerations: dict[str, Any] = {}
    if text.get("owners"):
        considerations["users"] = list(text["owners"])
    if text.get("intended_use"):
        considerations["useCases"] = [text["intended_use"]]
    if text.get("limitations"):
        considerations["technicalLimitations"] = [text["limitations"]]
    gaps = _gaps(facts)
    if gaps:
        considerations["performanceTradeoffs"] = gaps
    card: dict[str, Any] = {
        "bom-ref": "model-card",
        "modelParameters": {
            "approach": {"type": "supervised"}, "task": facts["task"],
            "modelArchitecture": facts.get("model_class") or "unknown",
            "datasets": [{"ref": d["bom-ref"]} for d in data],
            "inputs": [{"format": f"column {c}"} for c in facts["inputs"]],
            "outputs": [{"format": _output(facts)}],
        },
        "quantitativeAnalysis": {"performanceMetrics": _metrics(facts)},
        "properties": _properties(facts),
    }
    if considerations:
        card["considerations"] = considerations
    model: dict[str, Any] = {
        "type": "machine-learning-model", "bom-ref": "model",
        "name": facts["training"], "version": facts["environment"],
        "hashes": [_hash(facts["code_digest"])] if _hash(facts["code_digest"]) else [],
        "modelCard": card,
    }
    if text.get("description"):
        model["description"] = text["description"]
    if not model["hashes"]:
        del model["hashes"]
    libraries = [{"type": "library", "bom-ref": f"library:{name}", "name": name,
                  "version": version, "purl": f"pkg:pypi/{name}@{version}"}
                 for name, version in (facts.get("libraries") or {}).items()
                 if "://" not in version]
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": f"urn:uuid:{serial}",
        "metadata": {"timestamp": timestamp,
                     "tools": {"components": [{"type": "application", "name": "buildenv",
                                               "version": __version__}]},
                     "component": {"type": "machine-learning-model", "bom-ref": "model-meta",
                                   "name": facts["training"], "version": facts["environment"]}},
        "components": [model, *data, *libraries],
        "dependencies": [{"ref": "model", "dependsOn": [d["bom-ref"] for d in data + libraries]},
                         *({"ref": d["bom-ref"]} for d in data + libraries)],
    }


def promotion_properties(gates: list[dict[str, Any]], champion: str | None,
                         version: str) -> list[dict[str, str]]:
    """Gate results as BOM properties (appended to the registered version's card)."""
    out = [{"name": "buildenv:promotion:version", "value": version},
           {"name": "buildenv:promotion:previous", "value": champion or "none"}]
    out += [{"name": f"buildenv:promotion:gate:{g['name']}",
             "value": f"{'pass' if g['passed'] else 'FAIL'} ({g['actual']}, limit {g['limit']})"}
            for g in gates]
    return out


def _dataset(name: str, d: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "data", "bom-ref": f"dataset-{name}", "name": name,
        "data": [{"type": "dataset", "name": name,
                  "classification": "restricted" if d["restricted"] else "public",
                  "description": f"{d['rows']:,} rows" if isinstance(d.get("rows"), int)
                  else "rows not recorded"}],
    }
    found = _hash(d["digest"])
    if found:
        entry["hashes"] = [found]
    return entry


def _label_set(name: str, s: dict[str, Any]) -> dict[str, Any]:
    tax = s["taxonomy"]
    entry: dict[str, Any] = {
        "type": "data", "bom-ref": f"labels-{name}", "name": name,
        "version": f"taxonomy {tax['name']} v{tax['version']}",
        "data": [{"type": "dataset", "name": name,
                  "description": f"label set; annotation UI {s.get('ui_version') or 'unknown'}"}],
    }
    found = _hash(s["digest"])
    if found:
        entry["hashes"] = [found]
    return entry


def _hash(digest: str | None) -> dict[str, str] | None:
    if not digest or ":" not in digest:
        return None
    alg, content = digest.split(":", 1)
    return {"alg": _HASHES[alg], "content": content} if alg in _HASHES else None


def _output(facts: dict[str, Any]) -> str:
    label = facts.get("label") or {}
    if label.get("labels"):
        return f"class of label set {label['labels']}"
    return f"column {label.get('column', 'prediction')}"


def _metrics(facts: dict[str, Any]) -> list[dict[str, Any]]:
    ev = facts.get("evaluation")
    if not ev:
        return []
    out = []
    for metric, value in sorted(ev["metrics"].items()):
        out.append(_metric(metric, value, ev["intervals"].get(metric), "all"))
    for family in ev["slices"]:
        for entry in family.get("slices") or []:
            for metric, figure in sorted((entry.get("metrics") or {}).items()):
                out.append(_metric(metric, figure["value"], figure.get("interval"),
                                   entry["name"]))
    return out


def _metric(metric: str, value: float, interval: list | None, slice_name: str
            ) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": metric, "value": f"{value:.6f}", "slice": slice_name}
    if interval:
        entry["confidenceInterval"] = {"lowerBound": f"{interval[0]:.6f}",
                                       "upperBound": f"{interval[1]:.6f}"}
    return entry


def _gaps(facts: dict[str, Any]) -> list[str]:
    """Slices too small to judge or withheld: what the figures do not say."""
    ev = facts.get("evaluation") or {}
    out = []
    for family in ev.get("slices") or []:
        for entry in family.get("slices") or []:
            if entry.get("status") in ("too_small", "withheld"):
                out.append(f"slice {entry['name']}: {entry['status'].replace('_', ' ')}")
        if family.get("withheld"):
            out.append(f"{family['withheld']} slice(s) of {family.get('by')} withheld "
                       "(restricted rows)")
    return out


def _properties(facts: dict[str, Any]) -> list[dict[str, str]]:
    serving = facts.get("serving") or {}
    privacy = facts["privacy"]
    props = {
        "buildenv:environment": facts["environment"],
        "buildenv:environment:digest": facts["environment_digest"],
        "buildenv:environment:chain": " -> ".join(facts["chain"]),
        "buildenv:training:entry": facts["entry"],
        "buildenv:code:digest": facts["code_digest"],
        "buildenv:seed": str(facts["seed"]),
        "buildenv:serving:stack": str(serving.get("stack")),
        "buildenv:serving:requirements": ", ".join(serving.get("requirements") or []),
        "buildenv:operators": ", ".join(facts["ops"]),
        "buildenv:privacy:restricted": ", ".join(privacy["restricted"]) or "none",
        "buildenv:privacy:release": privacy["release"],
        "buildenv:privacy:epsilon_spent": f"{privacy['epsilon_spent']:g}",
    }
    if facts.get("isolation"):
        props["buildenv:isolation"] = json.dumps(facts["isolation"], sort_keys=True)
    if facts.get("coverage"):
        props["buildenv:coverage"] = json.dumps(facts["coverage"], sort_keys=True)
    if facts["importance"]:
        props["buildenv:importance"] = ", ".join(f"{n}={v:.3f}" for n, v in facts["importance"])
    if facts.get("onnx"):
        props["buildenv:onnx"] = json.dumps(facts["onnx"], sort_keys=True)
    return [{"name": k, "value": v} for k, v in props.items()]
