"""Which models use a column, and how much: alerts are ranked (and suppressed) by importance.

Triage reads the lineage of every model built against the environment
(`dist/*/<env>/buildenv.json`): its inputs, the columns it read and their importance.
"""

from __future__ import annotations

from dataclasses import dataclass

from buildenv.compile.artifact import read_lineage
from buildenv.core.project import Project

__all__ = ["Usage", "importance_of", "model_inputs", "model_usage"]

@dataclass(frozen=True)
class Usage:
    """A model built against the environment that reads a column."""

    training: str
    environment: str
    importance: float | None = None
    rank: int | None = None
    of: int = 0
    label: bool = False

    def describe(self) -> str:
        who = f"{self.training}@{self.environment}"
        if self.label:
            return f"{who} (the label)"
        if self.importance is None:
            return f"{who} (importance unknown)"
        return f"{who} (importance {self.importance:.2f}, rank {self.rank} of {self.of})"


def model_usage(project: Project, env: str, ds_name: str
                ) -> tuple[list[str], dict[str, list[Usage]]]:
    """Models in dist/*/<env>/buildenv.json, and per column of `ds_name` those that use it."""
    models: list[str] = []
    usage: dict[str, list[Usage]] = {}
    for lineage_file in sorted((project.root / "dist").glob(f"*/{env}/buildenv.json")):
        lineage = read_lineage(lineage_file.parent)
        if not lineage or lineage.get("environment", env) != env:
            continue
        training = str(lineage.get("training") or lineage_file.parent.parent.name)
        models.append(f"{training}@{env}")
        read = (lineage.get("datasets") or {}).get(ds_name)
        columns_read = set(read.get("columns_read") or []) if isinstance(read, dict) else None
        features = ((lineage.get("importance") or {}).get("features") or {})
        for column in lineage.get("inputs") or []:
            if columns_read is not None and column not in columns_read:
                continue
            info = features.get(column) or {}
            importance = info.get("importance")
            usage.setdefault(column, []).append(Usage(
                training, env, float(importance) if importance is not None else None,
                info.get("rank"), len(features)))
        label = lineage.get("label") or {}
        if label.get("dataset") == ds_name and label.get("column"):
            usage.setdefault(label["column"], []).append(Usage(training, env, label=True))
    return models, usage


def model_inputs(project: Project, env: str) -> dict[str, list[str]] | None:
    """column -> the models built against `env` that take it as input (`training@env`); None
    when no model is built against `env`."""
    found: dict[str, list[str]] | None = None
    for lineage_file in sorted((project.root / "dist").glob(f"*/{env}/buildenv.json")):
        lineage = read_lineage(lineage_file.parent)
        if not lineage or lineage.get("environment", env) != env:
            continue
        found = found if found is not None else {}
        model = f"{lineage.get('training') or lineage_file.parent.parent.name}@{env}"
        for column in lineage.get("inputs") or []:
            found.setdefault(column, []).append(model)
    return found


def importance_of(usages: list[Usage]) -> float | None:
    """The largest importance among the models (labels count as 1); None when unknown."""
    if any(u.label for u in usages):
        return 1.0
    known = [u.importance for u in usages if u.importance is not None]
    return max(known) if known else None

