"""Which repository modules a module imports, transitively: read from the source, never run.

Both sides use it: the build, for the code digest of its cache key (the entry module and what
it imports); the training process, for the code a model ships with (the modules its classes
come from and what they import). Imports resolve against the root (which is on the
training's `sys.path`) and relative to the importing file.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["module_closure"]


def module_closure(root: Path, start: list[Path]) -> list[Path]:
    """`start` and every repository module they import, transitively, sorted."""
    root = root.resolve()
    seen: dict[Path, None] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen[path] = None
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            names: list[tuple[str, int]] = []
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [(base, node.level)] + [(f"{base}.{a.name}" if base else a.name,
                                                  node.level) for a in node.names]
            for dotted, level in names:
                parts = [p for p in dotted.split(".") if p]
                bases = [path.parent] if level else [root, path.parent]
                if level > 1:
                    bases = [path.parents[level - 1]]
                for folder in bases:
                    candidate = folder.joinpath(*parts)
                    for option in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                        if option.is_file() and option.resolve().is_relative_to(root):
                            todo.append(option.resolve())
    return sorted(seen)
