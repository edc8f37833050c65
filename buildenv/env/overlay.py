"""Overlaying environment files (SPEC §2): how `extends` merges a child over its parent.

Mappings merge key by key, lists and scalars replace, `null` deletes an inherited key (and a
`null` of a file of its own is no key at all); every value remembers the file and line it came
from. Pure dict code, apart from `resolve` (which imports the models) so that the lock's plan
merges an edited environment exactly as resolving does, without pydantic
(`env.quick_validate`).
"""

from __future__ import annotations

import copy
from typing import Any

from buildenv.env.loader import KeyPath, Located, Position

__all__ = ["overlay"]


def overlay(target: dict[str, Any], source: dict[str, Any], prefix: KeyPath, located: Located,
             origin: dict[KeyPath, Position], deleted: dict[KeyPath, Position]) -> None:
    for key, value in source.items():
        path = prefix + (key,)
        if value is None:
            if key in target:
                deleted[path] = located.keys[path]
            target.pop(key, None)
            _forget(origin, path)
            continue
        deleted.pop(path, None)
        if isinstance(value, dict) and isinstance(target.get(key), dict) and not (
                path == ("label",) and _label_form(value) != _label_form(target[key])):
            origin[path] = located.keys[path]
            overlay(target[key], value, path, located, origin, deleted)
            continue
        target[key] = copy.deepcopy(value)
        _forget(origin, path)
        origin[path] = located.keys[path]
        for sub, pos in located.keys.items():
            if len(sub) > len(path) and sub[: len(path)] == path:
                origin[sub] = pos
        for sub, pos in located.values.items():
            if len(sub) > len(path) and sub[: len(path)] == path and sub not in origin:
                origin[sub] = pos


def _label_form(label: dict[str, Any]) -> str | None:
    """`label` takes a column or a label set: a child that switches form replaces the whole
    inherited label instead of merging into it."""
    if "labels" in label:
        return "labels"
    if "dataset" in label or "column" in label:
        return "column"
    return None


def _forget(origin: dict[KeyPath, Position], path: KeyPath) -> None:
    for sub in [p for p in origin if p[: len(path)] == path]:
        del origin[sub]
