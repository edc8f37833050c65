"""YAML with source positions: the only place that parses environment files.

PyYAML's composer gives every node a start mark; we build plain Python values
from the node tree ourselves so that each key path maps to the line and column
where it was written. Duplicate keys, which YAML loaders silently collapse, are
reported instead of hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["KeyPath", "Located", "Position", "load_yaml"]

KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class Position:
    path: str
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Located:
    """A parsed document plus where each key (and each value) sits in the file."""

    data: Any
    keys: dict[KeyPath, Position]  # position of the *key* of a mapping entry
    values: dict[KeyPath, Position]  # position of the value node
    problems: list[Diagnostic] = field(default_factory=list)  # e.g. duplicate keys (first kept)

    def position(self, path: KeyPath) -> Position | None:
        """The closest known position: the key itself, else its nearest parent."""
        path = tuple(path)
        while True:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


class _Constructor(yaml.constructor.SafeConstructor):
    pass


def _pos(display: str, mark: yaml.Mark) -> Position:
    return Position(display, mark.line + 1, mark.column + 1)


def load_yaml(file: Path, display: str) -> Located:
    """Parse `file`; `display` is the path shown in diagnostics (repo-relative)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DiagnosticError(
            [Diagnostic("BE053", f"cannot read {display}: {exc.strerror}", display)], 2
        ) from None
    except UnicodeDecodeError:
        raise DiagnosticError([Diagnostic("BE001", "file is not UTF-8 text", display, 1, 1)], 2) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(filter(None, [exc.context, exc.problem]))
        raise DiagnosticError([Diagnostic("BE001", f"invalid YAML: {message}", display, line, col)],
                              2) from None
    located = Located(data=None, keys={}, values={})
    problems: list[Diagnostic] = []
    if node is None:
        located.data = {}
        return located
    constructor = _Constructor()
    located.data = _build(node, (), display, constructor, located, problems)
    located.problems = problems
    return located


def _build(node: yaml.Node, path: KeyPath, display: str, constructor: _Constructor,
           located: Located, problems: list[Diagnostic]) -> Any:
    located.values[path] = _pos(display, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Diagnostic(
                    "BE001", "YAML merge keys (<<) are not supported; use `extends`",
                    display, key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                continue
            key = _scalar(key_node, constructor)
            key_pos = _pos(display, key_node.start_mark)
            if isinstance(key, (list, dict)):
                problems.append(Diagnostic("BE004", "mapping keys must be scalars", display,
                                           key_pos.line, key_pos.col))
                continue
            if key in seen:
                first = seen[key]
                problems.append(Diagnostic(
                    "BE002", f"duplicate key '{key}' (first defined at line {first.line})",
                    display, key_pos.line, key_pos.col,
                    hints=("remove one of the two entries",)))
                continue
            seen[key] = key_pos
            child = path + (key,)
            located.keys[child] = key_pos
            out[key] = _build(value_node, child, display, constructor, located, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, path + (i,), display, constructor, located, problems)
            for i, item in enumerate(node.value)
        ]
    return _scalar(node, constructor)


def _scalar(node: yaml.Node, constructor: _Constructor) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value = constructor.construct_object(node, deep=True)
        # dates stay ISO strings: the spec compares them as text bounds
        if hasattr(value, "isoformat") and not isinstance(value, (int, float, bool)):
            return node.value
        return value
    return constructor.construct_object(node, deep=True)
