"""Views of resolved environments for people: `show`, `show --explain`, `diff`."""

from __future__ import annotations

import json
from typing import Any

import yaml

from buildenv.env.loader import KeyPath
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Skew, omit_added_defaults, omit_added_section_defaults

__all__ = ["diff_environments", "explained_yaml", "resolved_document"]


def resolved_document(res: Resolved) -> dict[str, Any]:
    """The resolved environment as a user would write it (defaults filled in)."""
    data = res.env.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.pop("schema", None)
    for ds in data["datasets"].values():
        if ds.get("undeclared_columns") == "ignore":  # added later: shown when set
            del ds["undeclared_columns"]
        for col in ds["columns"].values():
            omit_added_defaults(col)
    monitoring = data.get("monitoring", {})
    if res.env.monitoring.skew == Skew():  # added later: shown when set
        monitoring.pop("skew", None)
    omit_added_section_defaults(data)
    if not data.get("labels"):  # shown like datasets, when there are any
        data.pop("labels", None)
    return data


def explained_yaml(res: Resolved) -> str:
    """The merged document as YAML, each key annotated with the file:line it came from.

    Only what files actually wrote is shown (defaults have no origin).
    """
    lines: list[str] = [f"# {res.name}: resolved from {' -> '.join(res.chain)}"]
    _emit(res.raw, (), 0, res, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    return str(yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix("...").strip())


def _emit(node: dict[str, Any], path: KeyPath, indent: int, res: Resolved,
          lines: list[str]) -> None:
    pad = "  " * indent
    for key, value in node.items():
        sub = path + (key,)
        pos = res.origin.get(sub)
        where = f"  # {pos.path}:{pos.line}" if pos else ""
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{_scalar(key)}:{where}")
            _emit(value, sub, indent + 1, res, lines)
        else:
            lines.append(f"{pad}{_scalar(key)}: {_scalar(value)}{where}")


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def diff_environments(a: Resolved, b: Resolved) -> list[dict[str, Any]]:
    """Leaf-level differences of two resolved environments, in document order."""
    flat_a: dict[str, Any] = {}
    flat_b: dict[str, Any] = {}
    _flatten(resolved_document(a), "", flat_a)
    _flatten(resolved_document(b), "", flat_b)
    for flat in (flat_a, flat_b):
        flat.pop("name", None)
        flat.pop("extends", None)
    changes = []
    for key in list(dict.fromkeys([*flat_a, *flat_b])):
        if key not in flat_b:
            changes.append({"path": key, "kind": "removed", "a": flat_a[key]})
        elif key not in flat_a:
            changes.append({"path": key, "kind": "added", "b": flat_b[key]})
        elif json.dumps(flat_a[key], sort_keys=True) != json.dumps(flat_b[key], sort_keys=True):
            changes.append({"path": key, "kind": "changed", "a": flat_a[key], "b": flat_b[key]})
    return changes
