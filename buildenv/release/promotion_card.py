"""The registered version's model card, with the gates that promoted it.

The artifact's own card (`model_card.md`, `model_card.json`) is part of its digest, so a
promotion never edits it: it logs a copy with the gate results appended to the version's MLflow
run under `promotion/` (the Markdown card gains a "Promotion" section with the comparison table
and every gate; the CycloneDX card gains `buildenv:promotion:*` properties). `buildenv card
--champion` prints the champion's promoted card.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from buildenv.compile.card import CARD_JSON, CARD_MD
from buildenv.compile.cyclonedx import promotion_properties
from buildenv.compile.registry import client
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.release.gates import Evaluation, champion_version, registry_error

__all__ = ["PROMOTED", "champion_card", "record_promotion"]

PROMOTED = "promotion"  # run artifact folder of the promoted cards


def _download(project: Project, run_id: str, path: str, scratch: Path) -> str | None:
    import mlflow.artifacts  # seconds of imports: only when a card is logged or read

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(scratch),
                                                    tracking_uri=project.tracking_uri())
    except Exception:
        return None
    return Path(local).read_text(encoding="utf-8")


def record_promotion(project: Project, ev: Evaluation, at: str) -> None:
    """Log the candidate's cards with the gate results to its run (`promotion/`)."""
    run_id = ev.candidate.run_id
    if not run_id:
        return
    c = client(project)
    gates = [g.__dict__ for g in ev.gates]
    previous = f"v{ev.champion.version}" if ev.champion else None
    with tempfile.TemporaryDirectory(prefix="buildenv-card-") as scratch:
        md = _download(project, run_id, f"model/{CARD_MD}", Path(scratch))
        document = _download(project, run_id, f"model/{CARD_JSON}", Path(scratch))
    if md is not None:
        section = ["", "## Promotion", "",
                   f"Promoted to `{ev.env}-champion` as v{ev.candidate.version} on {at} "
                   f"(previous champion: {previous or 'none'}).", "", "```", ev.table(), "```",
                   ""]
        c.log_text(run_id, md.rstrip("\n") + "\n" + "\n".join(section), f"{PROMOTED}/{CARD_MD}")
    if document is not None:
        data = json.loads(document)
        model = data["components"][0]
        card = model.setdefault("modelCard", {})
        card.setdefault("properties", []).extend(promotion_properties(
            gates, previous, f"v{ev.candidate.version}"))
        c.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
                   + "\n", f"{PROMOTED}/{CARD_JSON}")


def champion_card(project: Project, training: str, env: str, fmt: str) -> str:
    """The champion's card as promoted (its artifact's card if it was promoted before cards
    were recorded)."""
    name = CARD_JSON if fmt == "json" else CARD_MD
    try:
        c = client(project)
        version = champion_version(c, training, env)
    except Exception as exc:
        raise registry_error(project, exc, "looking up the champion") from None
    if version is None or not version.run_id:
        raise DiagnosticError([Diagnostic(
            "BE515", f"{training} has no {env}-champion to describe",
            hints=(f"`buildenv promote {training} --env {env}` makes one",))])
    with tempfile.TemporaryDirectory(prefix="buildenv-card-") as scratch:
        for path in (f"{PROMOTED}/{name}", f"model/{name}"):
            text = _download(project, version.run_id, path, Path(scratch))
            if text is not None:
                return text
    raise DiagnosticError([Diagnostic(
        "BE515", f"{training} v{version.version} ({env}-champion) has no model card: it was "
        "built before buildenv wrote cards", hints=(f"rebuild and promote it: `buildenv build "
                                                   f"{training} --env {env}`",))])


