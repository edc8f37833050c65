"""Labeling functions, read without running them: which functions a module declares, the
columns each reads, and each one's digest.

A module named by a label set's `source.functions` defines functions decorated
`@buildenv.labeling_function(columns=[...])`. The module is parsed, never imported, here:
every declared column must be a column of the label set's dataset (served or not: labeling
reads training data, it is not a model input), and the list must be literal so that it can be
checked before anything runs. At run time the function sees a batch holding exactly those
columns, so reading another one fails where it is written (BE871). Each function's digest
(`core.code.function_digests`) changes with its own source, with the code it shares with the
module's other functions, and with the repository modules the module imports: changing one
function reruns that function only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from buildenv.core.code import (
    decorated_functions,
    decorates,
    decorator_aliases,
    function_digests,
)
from buildenv.core.diagnostics import Diagnostic, did_you_mean
from buildenv.core.project import Project
from buildenv.data.lock.computed_labels import DECORATOR
from buildenv.env.resolve import Resolved

__all__ = ["LabelingFunction", "ParsedFunctions", "parse_functions"]


@dataclass(frozen=True)
class LabelingFunction:
    name: str
    line: int
    columns: tuple[str, ...]
    digest: str


@dataclass
class ParsedFunctions:
    """A label set's labeling functions, in the module's order, and the problems found."""

    label_set: str
    path: str  # repository-relative module path
    functions: list[LabelingFunction] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def digests(self) -> dict[str, str]:
        return {f.name: f.digest for f in self.functions}

    def columns(self) -> list[str]:
        """Every column some function reads, in first-declared order."""
        return list(dict.fromkeys(c for f in self.functions for c in f.columns))


def parse_functions(project: Project, res: Resolved, name: str) -> ParsedFunctions:
    """The labeling functions of label set `name` of `res`, statically checked (BE870 for
    the module and its declarations, BE871 for columns the dataset does not declare)."""
    spec = res.env.labels[name]
    assert spec.source is not None
    rel = spec.source.functions
    out = ParsedFunctions(name, rel)
    place = ("labels", name, "source", "functions")
    path = project.root / rel
    if not path.is_file():
        out.problems.append(res.diag("BE870", f"label set '{name}': functions module '{rel}' "
                                     "not found", *place,
                                     hints=("`functions` is a path relative to the repository "
                                            "root",)))
        return out
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    except SyntaxError as exc:
        out.problems.append(Diagnostic("BE870", f"syntax error: {exc.msg}", rel, exc.lineno,
                                       exc.offset))
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(res.diag("BE870", f"label set '{name}': cannot read '{rel}': {exc}",
                                     *place))
        return out
    digests = function_digests(project, rel, DECORATOR) or {}
    found = decorated_functions(path, DECORATOR)
    declared = found[0] if found is not None else {}
    columns = res.env.datasets[spec.dataset].columns
    first: dict[str, int] = {}
    aliases = decorator_aliases(tree, DECORATOR)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
                node.name not in declared or \
                not any(decorates(d, DECORATOR, aliases) for d in node.decorator_list):
            for bound in _bound(node):
                if bound in first:  # the module keeps this binding, which never votes
                    out.problems.append(Diagnostic(
                        "BE870", f"labeling function '{bound}' is bound again at line "
                        f"{node.lineno} (defined at line {first[bound]}): the module keeps the "
                        "new binding, so the labeling function never votes", rel, node.lineno,
                        node.col_offset + 1, hints=("give each rule, and anything else at the "
                                                    "module's top, its own name",)))
            continue
        if node.name in first:  # the module keeps the last one: the first would never vote
            out.problems.append(Diagnostic(
                "BE870", f"labeling function '{node.name}' is defined twice (first at line "
                f"{first[node.name]}): the second replaces the first", rel, node.lineno,
                node.col_offset + 1, hints=("give each rule its own name",)))
            continue
        first[node.name] = node.lineno
        problems, names = _declaration(node, rel, spec.dataset, res.env.name, columns,
                                       aliases)
        out.problems.extend(problems)
        if not problems:
            out.functions.append(LabelingFunction(node.name, node.lineno, tuple(names),
                                                  digests[node.name]))
    if not declared:
        out.problems.append(Diagnostic(
            "BE870", f"label set '{name}': '{rel}' defines no labeling function", rel, 1, 1,
            hints=("decorate each rule `@buildenv.labeling_function(columns=[...])`",)))
    return out


def _bound(node: ast.stmt) -> list[str]:
    """The names a top-level statement binds in the module."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign) or (isinstance(node, ast.AnnAssign) and node.value):
        targets = [node.target]
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
        targets = [node.target] if isinstance(node, (ast.For, ast.AsyncFor)) else [
            i.optional_vars for i in node.items if i.optional_vars is not None]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _declaration(node: ast.FunctionDef | ast.AsyncFunctionDef, rel: str, dataset: str,
                 env: str, declared: dict[str, Any], aliases: frozenset[str]
                 ) -> tuple[list[Diagnostic], list[str]]:
    """Problems of one decorated function, and the columns it declares."""
    call = next(d for d in node.decorator_list if decorates(d, DECORATOR, aliases))
    args = node.args
    positional = args.posonlyargs + args.args
    required = positional[: len(positional) - len(args.defaults)]
    problems = []
    if isinstance(node, ast.AsyncFunctionDef) or len(required) != 1 or \
            any(d is None for d in args.kw_defaults):
        problems.append(Diagnostic("BE870", f"labeling function '{node.name}' must take one "
                                   f"parameter, the batch: `def {node.name}(batch):`", rel,
                                   node.lineno, node.col_offset + 1))
    value = None
    if isinstance(call, ast.Call):
        value = next((k.value for k in call.keywords if k.arg == "columns"), None)
    items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else None
    if items is None or not items or not all(isinstance(e, ast.Constant) and
                                             isinstance(e.value, str) for e in items):
        problems.append(Diagnostic(
            "BE870", f"labeling function '{node.name}' declares its columns as a literal list: "
            "`@buildenv.labeling_function(columns=[\"a\", \"b\"])`", rel, call.lineno,
            call.col_offset + 1))
        return problems, []
    names = []
    for item in items:
        assert isinstance(item, ast.Constant)
        column = str(item.value)
        names.append(column)
        if column not in declared:
            hint = did_you_mean(column, declared)
            problems.append(Diagnostic(
                "BE871", f"labeling function '{node.name}': column '{column}' is not in dataset "
                f"'{dataset}' of environment {env}", rel, item.lineno, item.col_offset + 1,
                hints=(hint,) if hint else ()))
    return problems, names
