"""Where each key of a TOML document is written: what `tomllib` does not keep.

Diagnostics about `[tool.buildenv]` point at the line and column of the key they concern, as
environment files' do. `key_positions` scans the text once: table headers (`[a.b]`,
`[[a.b]]`), keys (bare, quoted, dotted) and the keys of inline tables (`x = {a = 1}`), skipping
comments, strings and values that span lines (arrays, multi-line strings). It assumes text that
`tomllib` already accepted.
"""

from __future__ import annotations

import re

__all__ = ["KeyPath", "key_positions", "position_of"]

KeyPath = tuple[str, ...]
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def key_positions(text: str) -> dict[KeyPath, tuple[int, int]]:
    """Key path -> (line, column), 1-based, of where the key (or its table header) is written."""
    out: dict[KeyPath, tuple[int, int]] = {}
    table: KeyPath = ()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        col = len(line) - len(stripped)
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        if stripped.startswith("["):
            double = stripped.startswith("[[")
            keys, _ = _dotted_key(stripped, 2 if double else 1)
            table = tuple(keys)
            out.setdefault(table, (i + 1, col + 1))
            i += 1
            continue
        keys, end = _dotted_key(line, col)
        if not keys or end >= len(line) or line[end] != "=":
            i += 1
            continue
        path = table + tuple(keys)
        out.setdefault(path, (i + 1, col + 1))
        for n in range(1, len(keys)):  # `a.b = 1` defines table `a` here too
            out.setdefault(table + tuple(keys[:n]), (i + 1, col + 1))
        value_at = _skip_space(line, end + 1)
        i = _value(lines, i, value_at, path, out)
    return out


def position_of(positions: dict[KeyPath, tuple[int, int]], path: KeyPath
                ) -> tuple[int, int] | None:
    """The position of `path`, else of its closest written parent."""
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return None


def _skip_space(line: str, at: int) -> int:
    while at < len(line) and line[at] in " \t":
        at += 1
    return at


def _dotted_key(line: str, at: int) -> tuple[list[str], int]:
    """The dotted key starting at `at` and the index just after it (and its spaces)."""
    keys: list[str] = []
    at = _skip_space(line, at)
    while at < len(line):
        char = line[at]
        if char in "\"'":
            close = at + 1
            while close < len(line) and line[close] != char:
                close += 2 if char == '"' and line[close] == "\\" else 1
            raw = line[at + 1:close]
            keys.append(raw.encode().decode("unicode_escape") if char == '"' and "\\" in raw
                        else raw)
            at = close + 1
        else:
            match = _BARE.match(line, at)
            if not match:
                break
            keys.append(match.group(0))
            at = match.end()
        at = _skip_space(line, at)
        if at < len(line) and line[at] == ".":
            at = _skip_space(line, at + 1)
            continue
        break
    return keys, at


def _value(lines: list[str], i: int, at: int, path: KeyPath,
           out: dict[KeyPath, tuple[int, int]]) -> int:
    """Skip the value starting at lines[i][at] (recording inline-table keys); the next line."""
    line = lines[i]
    if line.startswith(('"""', "'''"), at):
        quote = line[at:at + 3]
        if line.count(quote, at + 3) == 0:
            i += 1
            while i < len(lines) and quote not in lines[i]:
                i += 1
        return i + 1
    if at < len(line) and line[at] == "{":
        _inline_table(line, at, path, i + 1, out)
        return i + 1
    depth = _bracket_depth(line[at:])
    while depth > 0 and i + 1 < len(lines):  # an array spanning lines
        i += 1
        depth += _bracket_depth(lines[i])
    return i + 1


def _bracket_depth(text: str) -> int:
    """Net `[` minus `]` outside strings and comments."""
    depth, quote, j = 0, "", 0
    while j < len(text):
        char = text[j]
        if quote:
            if char == "\\" and quote == '"':
                j += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        j += 1
    return depth


def _inline_table(line: str, at: int, path: KeyPath, line_no: int,
                  out: dict[KeyPath, tuple[int, int]]) -> int:
    """Record the keys of the inline table opening at `at`; the index after its `}`."""
    j = at + 1
    while j < len(line):
        j = _skip_space(line, j)
        if j >= len(line) or line[j] == "}":
            return j + 1
        keys, end = _dotted_key(line, j)
        if not keys or end >= len(line) or line[end] != "=":
            return len(line)
        inner = path + tuple(keys)
        out.setdefault(inner, (line_no, j + 1))
        j = _skip_space(line, end + 1)
        if j < len(line) and line[j] == "{":
            j = _inline_table(line, j, inner, line_no, out)
        else:
            j = _scalar_end(line, j)
        j = _skip_space(line, j)
        if j < len(line) and line[j] == ",":
            j += 1
    return j


def _scalar_end(line: str, j: int) -> int:
    """The index after a scalar or array value inside an inline table."""
    depth, quote = 0, ""
    while j < len(line):
        char = line[j]
        if quote:
            if char == "\\" and quote == '"':
                j += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char in ",}" and depth == 0:
            return j
        j += 1
    return j
