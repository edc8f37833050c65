"""YAML with source positions: the only place that parses environment files.

PyYAML's composer gives every node a start mark; we build plain Python values
from the node tree ourselves so that each key path maps to the line and column
where it was written. Duplicate keys, which YAML loaders silently collapse, are
reported instead of hidden.

Environment files come from pull requests, so parsing is bounded: a file larger than
`BUILDENV_MAX_ENV_BYTES` (default 256 KiB) is refused before it is read (BE030), a document
that expands to more than `BUILDENV_MAX_ENV_VALUES` values (default 100,000; anchors and
aliases count once per use, which is what defuses an alias bomb) is refused as soon as the
count is passed (BE031), nesting deeper than 64 levels is refused (BE032), and tags or values
PyYAML's safe constructor cannot build are errors, not crashes (BE033).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["KeyPath", "Located", "Position", "load_yaml", "max_bytes", "max_values"]

KeyPath = tuple[Any, ...]

MAX_BYTES_ENV = "BUILDENV_MAX_ENV_BYTES"
MAX_VALUES_ENV = "BUILDENV_MAX_ENV_VALUES"
MAX_DEPTH = 64
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _limit(var: str, default: int) -> int:
    try:
        value = int(os.environ.get(var) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def max_bytes() -> int:
    return _limit(MAX_BYTES_ENV, 256 << 10)


def max_values() -> int:
    return _limit(MAX_VALUES_ENV, 100_000)


class _TooBig(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


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


class _Mark(Protocol):
    """Where the YAML parser is (the C and the pure-Python parser each have their class)."""

    line: int
    column: int


def _pos(display: str, mark: yaml.Mark) -> Position:
    return Position(display, mark.line + 1, mark.column + 1)


def load_yaml(file: Path, display: str) -> Located:
    """Parse `file`; `display` is the path shown in diagnostics (repo-relative)."""
    try:
        size = file.stat().st_size
        if size > max_bytes():
            raise DiagnosticError([Diagnostic(
                "BE030", f"environment file is {size} bytes; the limit is {max_bytes()}",
                display, hints=(f"environment files are small; {MAX_BYTES_ENV} raises the "
                                "limit",))], 2)
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DiagnosticError(
            [Diagnostic("BE053", f"cannot read {display}: {exc.strerror}", display)], 2
        ) from None
    except UnicodeDecodeError:
        raise DiagnosticError([Diagnostic("BE001", "file is not UTF-8 text", display, 1, 1)], 2) from None
    try:
        node = _compose(text, display)
    except _TooBig as exc:
        raise DiagnosticError([exc.diagnostic], 2) from None
    except RecursionError:
        raise DiagnosticError([_too_deep(display, None)], 2) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(filter(None, [exc.context, exc.problem]))
        raise DiagnosticError([Diagnostic("BE001", f"invalid YAML: {message}", display, line, col)],
                              2) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control codes)
        before = text[:max(exc.position, 0)]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise DiagnosticError([Diagnostic(
            "BE001", f"invalid YAML: unacceptable character #x{exc.character:04x}"
            if isinstance(exc.character, int) else f"invalid YAML: {exc.reason}",
            display, line, col)], 2) from None
    except yaml.YAMLError as exc:
        raise DiagnosticError([Diagnostic("BE001", f"invalid YAML: {exc}", display, 1, 1)],
                              2) from None
    located = Located(data=None, keys={}, values={})
    problems: list[Diagnostic] = []
    if node is None:
        located.data = {}
        return located
    constructor = _Constructor()
    budget = [max_values()]
    try:
        located.data = _build(node, (), display, constructor, located, problems, budget)
    except _TooBig as exc:
        raise DiagnosticError([exc.diagnostic], 2) from None
    located.problems = problems
    return located


#: libyaml's parser when PyYAML was built with it: 10-20x faster than the pure-Python one,
#: which was most of a re-lock's time spent on environment files.
_FAST: type[Any] | None = getattr(yaml, "CSafeLoader", None)


def _compose(text: str, display: str) -> yaml.Node | None:
    """The node tree of `text`, checked first (`_precheck`). Parsed by libyaml when available;
    a document libyaml refuses is parsed again by the pure-Python parser, so that every
    diagnostic (message, line, column) is the one that parser gives."""
    if _FAST is not None:
        try:
            _precheck(text, display, _FAST)
            return yaml.compose(text, Loader=_FAST)
        except (yaml.YAMLError, RecursionError):
            pass  # said again below, by the parser whose messages the diagnostics quote
    _precheck(text, display, yaml.SafeLoader)
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _precheck(text: str, display: str, loader: type[Any] = yaml.SafeLoader) -> None:
    """One streaming pass over the parser's events, before any node is built: refuse deep
    nesting and documents whose aliases expand past the limit, at the event that crosses it."""
    limit = max_values()
    open_sizes = [0]  # expanded size of each open collection (the document at the bottom)
    open_anchors: list[str | None] = []
    anchored: dict[str, int] = {}
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            if len(open_anchors) > MAX_DEPTH:
                raise _TooBig(_too_deep(display, event.start_mark))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            size = open_sizes.pop()
            anchor = open_anchors.pop()
            if anchor:
                anchored[anchor] = size
            open_sizes[-1] += size
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                anchored[event.anchor] = 1
            open_sizes[-1] += 1
        elif isinstance(event, yaml.AliasEvent):
            open_sizes[-1] += anchored.get(event.anchor or "", 1)
        else:
            continue
        if sum(open_sizes) > limit:
            raise _TooBig(_too_many(display, event.start_mark))


def _too_many(display: str, mark: _Mark | None) -> Diagnostic:
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Diagnostic(
        "BE031", f"the document expands to more than {max_values()} values",
        display, line, col,
        hints=("anchors and aliases (&a / *a) count once per use: an alias of an alias "
               "multiplies", f"{MAX_VALUES_ENV} raises the limit"))


def _too_deep(display: str, mark: _Mark | None) -> Diagnostic:
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Diagnostic("BE032", f"YAML nesting is deeper than {MAX_DEPTH} levels", display,
                      line, col, hints=("environment files nest a few levels deep; this one "
                                        "looks generated or hostile",))


def _build(node: yaml.Node, path: KeyPath, display: str, constructor: _Constructor,
           located: Located, problems: list[Diagnostic], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig(_too_many(display, node.start_mark))
    if len(path) > MAX_DEPTH:
        raise _TooBig(_too_deep(display, node.start_mark))
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        raise _TooBig(_unsupported(display, node, f"tag {node.tag}"))
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
            key_pos = _pos(display, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Diagnostic("BE004", "mapping keys must be scalars", display,
                                           key_pos.line, key_pos.col))
                continue
            key = _scalar(key_node, constructor, display)
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
            out[key] = _build(value_node, child, display, constructor, located, problems,
                              budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, path + (i,), display, constructor, located, problems, budget)
            for i, item in enumerate(node.value)
        ]
    return _scalar(node, constructor, display)


def _unsupported(display: str, node: yaml.Node, what: str) -> Diagnostic:
    return Diagnostic("BE033", f"unsupported YAML value: {what}", display,
                      node.start_mark.line + 1, node.start_mark.column + 1,
                      hints=("environment files hold plain mappings, lists, strings, numbers, "
                             "booleans and null",))


def _scalar(node: yaml.Node, constructor: _Constructor, display: str) -> Any:
    try:
        value = constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0][:120]
        raise _TooBig(_unsupported(display, node, problem)) from None
    # dates stay ISO strings: the spec compares them as text bounds
    if hasattr(value, "isoformat") and not isinstance(value, (int, float, bool)):
        return node.value
    return value
