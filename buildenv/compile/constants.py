"""What the static checks can know about a name without running code: module constants, folded.

Trainings name their features once, at module level, and read them with expressions such as
`ctx.read("flights", columns=CAT + NUM + ["status"])`. `Constants` folds such expressions to
the column names they hold: string literals, lists and tuples of them (`*starred` items
included), `+` of folded lists, `list(...)`/`tuple(...)` of one, and names bound once at module
level to any of these, in the module itself or imported from a repository module
(`from features import CAT`). Anything else (a name assigned twice, a function call, a
comprehension) is unknown, and the read stays unchecked (BE105).

Each folded name keeps where it is written: the string literal in this module, or, for a
constant imported from another module, the place in this module that names the constant.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["Constants", "Located"]

Located = tuple[str, int, int]  # (value, line, col) in the module being checked
_DEPTH = 16  # names through names: deeper is unknown (and no cycle runs forever)


class Constants:
    """The module-level constants of one module (and those it imports from the repository)."""

    def __init__(self, tree: ast.Module, path: Path | None = None, root: Path | None = None):
        self.values = _bound_once(tree)
        self.imported: dict[str, tuple[Path, str]] = {}
        if path is not None and root is not None:
            self.imported = _imported(tree, path, root)
        self._modules: dict[Path, Constants | None] = {}

    def strings(self, node: ast.expr, depth: int = 0, at: ast.expr | None = None
                ) -> list[Located] | None:
        """The strings a list expression folds to, or None when it cannot be folded. `at`:
        where to place the items (set when folding a constant of another module)."""
        if depth > _DEPTH:
            return None
        where = at or node
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [(node.value, where.lineno, where.col_offset + 1)]
        if isinstance(node, (ast.List, ast.Tuple)):
            out: list[Located] = []
            for item in node.elts:
                if isinstance(item, ast.Starred):
                    got = self.strings(item.value, depth + 1, at)
                else:
                    text = self.string(item, depth + 1)
                    place = at or item
                    got = None if text is None else [(text, place.lineno,
                                                      place.col_offset + 1)]
                if got is None:
                    return None
                out.extend(got)
            return out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left = self.strings(node.left, depth + 1, at)
            right = self.strings(node.right, depth + 1, at)
            return None if left is None or right is None else left + right
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("list", "tuple") and len(node.args) == 1
                and not node.keywords):
            return self.strings(node.args[0], depth + 1, at)
        if isinstance(node, ast.Name):
            if node.id in self.values:
                value = self.values[node.id]
                if isinstance(value, ast.Constant):
                    return None  # a single string is not a list of columns
                return self.strings(value, depth + 1, at)
            if node.id in self.imported:
                module, name = self.imported[node.id]
                other = self._module(module)
                if other is None or name not in other.values:
                    return None
                return other.strings(other.values[name], depth + 1, at or node)
        return None

    def string(self, node: ast.expr, depth: int = 0) -> str | None:
        """The one string `node` folds to (a literal, or a name bound to one)."""
        if depth > _DEPTH:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.values:
                return self.string(self.values[node.id], depth + 1)
            if node.id in self.imported:
                module, name = self.imported[node.id]
                other = self._module(module)
                if other is not None and name in other.values:
                    return other.string(other.values[name], depth + 1)
        return None

    def _module(self, path: Path) -> Constants | None:
        if path not in self._modules:
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError):
                self._modules[path] = None
            else:
                self._modules[path] = Constants(tree)
        return self._modules[path]


def _bound_once(tree: ast.Module) -> dict[str, ast.expr]:
    """Names assigned exactly once at module level (plain or annotated), and their values."""
    seen: dict[str, list[ast.expr | None]] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            seen.setdefault(node.name, []).append(None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                seen.setdefault((alias.asname or alias.name).split(".")[0], []).append(None)
        for target in targets:
            if isinstance(target, ast.Name):
                seen.setdefault(target.id, []).append(value)
            else:  # a, b = ...: every name in it is unknown
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        seen.setdefault(name.id, []).append(None)
    return {name: values[0] for name, values in seen.items()
            if len(values) == 1 and values[0] is not None}


def _imported(tree: ast.Module, path: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """`from module import NAME [as ALIAS]` of repository modules: alias -> (file, NAME)."""
    out: dict[str, tuple[Path, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        parts = [p for p in (node.module or "").split(".") if p]
        bases = [path.parents[node.level - 1]] if node.level else [root, path.parent]
        for base in bases:
            module = base.joinpath(*parts)
            found = next((f for f in (module.with_suffix(".py"), module / "__init__.py")
                          if parts and f.is_file()), None)
            if found is not None and found.resolve().is_relative_to(root.resolve()):
                for alias in node.names:
                    out[alias.asname or alias.name] = (found.resolve(), alias.name)
                break
    return out
