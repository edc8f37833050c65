"""The model card: what buildenv knows about a model, for people and for machines.

Generated at build from the lineage, never typed by hand: the training and its code digest,
the libraries the model's classes come from at their exact versions (and the toolchain lock),
the environment and its `extends` chain, the datasets with digests and row counts, label sets
with taxonomy and UI versions, the served inputs, the serving stack and its operators, metrics
overall and per slice with their intervals, label coverage, importance, ONNX parity, and
privacy (which datasets are restricted, what a release spent). Free text (description,
intended use, limitations, owners) comes from the training's table in pyproject.toml. Every
figure is the lineage's, which already follows the privacy policy: a withheld figure is
withheld here too. The artifact carries `model_card.md` and `model_card.json` (a CycloneDX 1.6
ML-BOM, `compile.cyclonedx`); both are in `model_digest`, and the same inputs give the same
bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildenv.compile.cyclonedx import cyclonedx_card
from buildenv.core.project import TrainingConfig
from buildenv.env.resolve import Resolved

__all__ = ["CARD_JSON", "CARD_MD", "card_facts", "markdown", "write_card"]

CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"


def card_facts(lineage: dict, config: TrainingConfig, res: Resolved) -> dict[str, Any]:
    """What the card says, from the lineage (before its `model_digest` exists)."""
    env = res.env
    evaluation = lineage.get("evaluation") or {}
    release = evaluation.get("release") or {}
    restricted = sorted(env.privacy.restricted)
    return {
        "training": lineage["training"], "entry": lineage["entry"],
        "environment": lineage["environment"], "chain": lineage.get("environment_chain") or [],
        "environment_digest": lineage["environment_digest"],
        "code_digest": lineage["code_digest"], "cache_key": lineage.get("cache_key"),
        "seed": lineage.get("seed"), "buildenv_version": lineage.get("buildenv_version"),
        "libraries": dict(sorted((lineage.get("libraries") or {}).items())),
        "toolchain_lock": (lineage.get("toolchain") or {}).get("lock"),
        "text": config.card_text(),
        "model_class": lineage.get("model_class"), "inputs": lineage.get("inputs") or [],
        "ops": sorted({op["class"] for op in lineage.get("ops") or []}),
        "serving": lineage.get("serving"), "label": lineage.get("label"),
        "task": "classification" if env.label_classes() or (lineage.get("label") or {}).get(
            "classes") else "regression",
        "datasets": {name: {"digest": d["digest"], "rows": d.get("rows"), "uri": d.get("uri"),
                            "restricted": name in restricted}
                     for name, d in sorted((lineage.get("datasets") or {}).items())},
        "labels": {name: {"digest": s["digest"], "taxonomy": s["taxonomy"],
                          "ui_version": s.get("ui_version"), "examples": s.get("examples"),
                          "label": s.get("label")}
                   for name, s in sorted((lineage.get("labels") or {}).items())},
        "evaluation": {"rows": evaluation.get("rows"), "method": evaluation.get("method"),
                       "metrics": evaluation.get("metrics") or {},
                       "intervals": evaluation.get("intervals") or {},
                       "bootstrap": evaluation.get("bootstrap"),
                       "slices": evaluation.get("slices") or []} if evaluation else None,
        "coverage": lineage.get("coverage"),
        "isolation": lineage.get("isolation"),
        "importance": _importance(lineage.get("importance")),
        "onnx": lineage.get("onnx"),
        "privacy": {"restricted": restricted, "min_group_size": env.privacy.min_group_size,
                    "release": env.privacy.release,
                    "epsilon_spent": release.get("epsilon_spent", 0.0),
                    "evaluation_restricted": bool(release.get("restricted"))},
    }


def _libraries(facts: dict[str, Any]) -> str:
    """`scikit-learn` 1.9.1, ... (toolchain lock `sha256:...`): the exact versions."""
    named = ", ".join(f"`{n}` {v}" for n, v in facts.get("libraries", {}).items()) or "-"
    lock = facts.get("toolchain_lock")
    return named + (f" (toolchain lock `{lock}`)" if lock else "")


def _importance(importance: dict | None) -> list[tuple[str, float]]:
    features = (importance or {}).get("features") or {}
    ranked = sorted(features.items(), key=lambda kv: kv[1].get("rank", 0))
    return [(name, float(f.get("importance", 0.0))) for name, f in ranked]


def write_card(model_dir: Path, facts: dict[str, Any], serial: str, timestamp: str) -> None:
    """Write both cards into the artifact directory (before its digest is taken)."""
    (model_dir / CARD_MD).write_text(markdown(facts), encoding="utf-8")
    document = cyclonedx_card(facts, serial, timestamp)
    (model_dir / CARD_JSON).write_text(
        json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8")


def markdown(facts: dict[str, Any]) -> str:
    """The card for people."""
    text = facts["text"]
    lines = [f"# Model card: {facts['training']} @ {facts['environment']}", ""]
    lines += [text["description"], ""] if text.get("description") else []
    lines += ["## Intended use", "", text.get("intended_use") or "(not stated in pyproject.toml)",
              "", "## Limitations", "", text.get("limitations") or
              "(not stated in pyproject.toml)", "", "## Owners", ""]
    lines += [f"- {o}" for o in text.get("owners") or []] or ["(not stated in pyproject.toml)"]
    lines += ["", "## Model", "",
              f"- training `{facts['training']}` (`{facts['entry']}`), code "
              f"`{facts['code_digest']}`, seed {facts['seed']}",
              f"- model `{facts['model_class']}`, task {facts['task']}",
              f"- inputs (served): {', '.join(f'`{c}`' for c in facts['inputs']) or '-'}",
              f"- operators: {', '.join(f'`{o}`' for o in facts['ops']) or '-'}",
              f"- trained with: {_libraries(facts)}",
              f"- built by buildenv {facts['buildenv_version']}", "",
              "## Environment", "",
              f"- `{facts['environment']}` (digest `{facts['environment_digest']}`), extends "
              f"chain: {' -> '.join(facts['chain'])}"]
    serving = facts.get("serving") or {}
    if serving:
        lines.append(f"- serving stack `{serving.get('stack')}`, requirements "
                     f"{', '.join(f'`{r}`' for r in serving.get('requirements') or [])}")
    lines += ["", "## Data", "", "| dataset | digest | rows | restricted |", "| --- | --- | --- | --- |"]
    for name, d in facts["datasets"].items():
        lines.append(f"| `{name}` | `{d['digest']}` | {_count(d['rows'])} | "
                     f"{'yes' if d['restricted'] else 'no'} |")
    if facts["labels"]:
        lines += ["", "| label set | taxonomy | UI version | examples | the label |",
                  "| --- | --- | --- | --- | --- |"]
        for name, s in facts["labels"].items():
            tax = s["taxonomy"]
            lines.append(f"| `{name}` | {tax['name']} v{tax['version']} | "
                         f"{s.get('ui_version') or '-'} | {_count(s.get('examples'))} | "
                         f"{'yes' if s.get('label') else 'no'} |")
    lines += _evaluation(facts)
    lines += _coverage(facts.get("coverage"))
    if facts["importance"]:
        lines += ["", "## Importance", "", "| input | importance |", "| --- | --- |"]
        lines += [f"| `{n}` | {v:.3f} |" for n, v in facts["importance"]]
    onnx = facts.get("onnx")
    if onnx:
        lines += ["", "## ONNX parity", "", "```", _plain(onnx), "```"]
    privacy = facts["privacy"]
    lines += ["", "## Privacy", "",
              f"- restricted datasets: {', '.join(privacy['restricted']) or 'none'}",
              f"- evaluation rows restricted: {'yes' if privacy['evaluation_restricted'] else 'no'}"
              f"; release policy `{privacy['release']}`, min_group_size "
              f"{privacy['min_group_size']}",
              f"- epsilon spent by this artifact's released figures: "
              f"{privacy['epsilon_spent']:g}"]
    isolation = facts.get("isolation")
    if isolation:
        lines.append(f"- the training ran with sandbox `{isolation['mechanism']}` (policy "
                     f"`{isolation['policy']}`): network `{isolation['network']}`, data as "
                     f"{isolation['data']}")
    lines.append("")
    return "\n".join(lines)


def _evaluation(facts: dict[str, Any]) -> list[str]:
    ev = facts.get("evaluation")
    if not ev:
        return ["", "## Evaluation", "", "(no label: the environment has no evaluation rows)"]
    boot = ev.get("bootstrap") or {}
    level = f"{boot.get('confidence', 0.95):.0%}"
    lines = ["", "## Evaluation", "",
             f"{_count(ev.get('rows'))} evaluation rows ({ev.get('method')}); intervals: "
             f"{level}, {boot.get('resamples', '-')} bootstrap resamples (seed "
             f"{boot.get('seed', '-')})", "", "| slice | rows | metric | value | interval |",
             "| --- | --- | --- | --- | --- |"]
    for metric, value in sorted(ev["metrics"].items()):
        lines.append(f"| all | {_count(ev.get('rows'))} | {metric} | {value:.4f} | "
                     f"{_interval(ev['intervals'].get(metric))} |")
    for family in ev["slices"]:
        for entry in family.get("slices") or []:
            if entry.get("status") == "withheld":
                lines.append(f"| {entry['name']} | withheld | | | |")
                continue
            rows = entry.get("rows")
            rows_text = _count(rows.get("value") if isinstance(rows, dict) else rows)
            status = "" if entry.get("status") in ("scored", "released") else \
                f" ({entry['status'].replace('_', ' ')})"
            for metric, figure in sorted((entry.get("metrics") or {}).items()):
                lines.append(f"| {entry['name']}{status} | {rows_text} | {metric} | "
                             f"{figure['value']:.4f} | {_interval(figure.get('interval'))} |")
        if family.get("withheld"):
            lines.append(f"| {family.get('by', '?')}: {family['withheld']} more value(s) | "
                         "withheld | | | |")
    return lines


def _coverage(coverage: dict | None) -> list[str]:
    lines = ["", "## Label coverage", ""]
    if not coverage:
        return lines + ["(not declared: `label.coverage`)"]
    lines += [f"rules: `{_plain(coverage.get('rules'))}`", ""]
    for where in ("training", "evaluation"):
        part = coverage.get(where) or {}
        counts = ", ".join(f"{k}: {_count(v)}" for k, v in (part.get("classes") or {}).items())
        below = ", ".join(part.get("below") or []) or "none"
        lines.append(f"- {where} rows ({_count(part.get('rows'))}): {counts}; below the rules: "
                     f"{below}")
    return lines


def _interval(interval: list | None) -> str:
    return "-" if not interval else f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def _count(value: Any) -> str:
    return "withheld" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _plain(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
