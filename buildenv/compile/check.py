"""Static checks of training code (`buildenv check`): no data read, no code run.

The training module is parsed, never imported. Every `ctx.read("dataset",
columns=[...])` and `ctx.scan(...)` whose arguments are literals or fold to them
(module constants such as `CAT + NUM + [LABEL]`: `constants.Constants`) is checked
against the environment (dataset, columns and the columns of literal `filters` declared),
and estimator imports are compared with the
serving stack's allow-list as early warnings (classes for `sklearn`, the tree ensemble
operators tree models convert to for `onnx`; verification after training is authoritative). `ctx` is whatever the entry function names its parameter;
helpers that take a parameter of the same name are checked too.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field

from buildenv.compile.constants import Constants
from buildenv.core.code import repo_imports
from buildenv.core.diagnostics import Diagnostic, Severity, did_you_mean
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved
from buildenv.env.spec import op_allowed

__all__ = ["ReadCall", "check_training", "parse_training"]

# Modules whose CamelCase names are tools, not parts of a fitted model.
_NOT_MODEL_PARTS = ("sklearn.model_selection", "sklearn.metrics", "sklearn.utils",
                    "sklearn.datasets", "sklearn.exceptions", "sklearn.inspection",
                    "sklearn.base", "sklearn.calibration.CalibrationDisplay")


@dataclass(frozen=True)
class ReadCall:
    line: int
    col: int
    dataset: str | None  # None when not a literal
    columns: tuple[tuple[str, int, int], ...] | None  # (name, line, col); None when not literal
    dataset_at: tuple[int, int] | None = None  # (line, col) of the dataset argument
    method: str = "read"  # read | scan
    filter_columns: tuple[tuple[str, int, int], ...] = ()  # literal filter columns


@dataclass
class ParsedTraining:
    path: str  # repo-relative
    tree: ast.Module | None
    problems: list[Diagnostic]
    reads: list[ReadCall]
    imports: list[tuple[str, int, int]]  # fully qualified name, line, col
    label_calls: list[tuple[int, int]] = field(default_factory=list)  # ctx.labels(): line, col
    entry_line: int | None = None


def _entry_position(project: Project, training: str) -> tuple[int | None, int | None]:
    pyproject = project.root / "pyproject.toml"
    if not pyproject.is_file():
        return None, None
    header = f"[tool.buildenv.trainings.{training}]"
    lines = pyproject.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() in (header, f'[tool.buildenv.trainings."{training}"]'):
            for j in range(i + 1, len(lines)):
                if lines[j].strip().startswith("entry"):
                    return j + 1, 1
            return i + 1, 1
    return None, None


def parse_training(project: Project, training: str, config: TrainingConfig) -> ParsedTraining:
    rel = config.module_path
    path = project.root / rel
    if not path.is_file():
        line, col = _entry_position(project, training)
        return ParsedTraining(rel, None, [Diagnostic(
            "BE107", f"training '{training}': module '{rel}' not found", "pyproject.toml", line,
            col, hints=("entry is `path/relative/to/root.py:function`",))], [], [])
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as exc:
        return ParsedTraining(rel, None, [Diagnostic(
            "BE100", f"syntax error: {exc.msg}", rel, exc.lineno, exc.offset)], [], [])
    problems: list[Diagnostic] = []
    func = next((node for node in tree.body if isinstance(node, (ast.FunctionDef,
                                                                  ast.AsyncFunctionDef))
                 and node.name == config.function), None)
    if func is None:
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        hint = did_you_mean(config.function, defined)
        line, col = _entry_position(project, training)
        problems.append(Diagnostic("BE103", f"'{rel}' defines no top-level function "
                                   f"'{config.function}'", "pyproject.toml", line, col,
                                   hints=(hint,) if hint else ()))
        return ParsedTraining(rel, tree, problems, [], _imports(tree))
    args = func.args
    positional = args.posonlyargs + args.args
    required_kw = [a for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    required = positional[: len(positional) - len(args.defaults)]
    # called as `train(ctx)`: one positional parameter, any others must have defaults
    if (isinstance(func, ast.AsyncFunctionDef) or not positional or len(required) > 1
            or required_kw):
        problems.append(Diagnostic("BE104", f"entry '{config.function}' must take exactly one "
                                   "parameter, the build context: `def "
                                   f"{config.function}(ctx):`", rel, func.lineno,
                                   func.col_offset + 1))
    ctx_name = positional[0].arg if positional else "ctx"
    reached = _reached(tree, config.function, path.stem)
    reads = _reads(reached, ctx_name, Constants(tree, path, project.root))
    return ParsedTraining(rel, tree, problems, reads, _imports(tree),
                          _label_calls(reached, ctx_name), func.lineno)


def _reached(tree: ast.Module, entry: str, own: str) -> ast.Module:
    """The module without the plain top-level functions its entry never names, directly or
    through the functions and module-level code it does name: one module may hold several
    entries (two transforms over different inputs), each checked against its own datasets
    only. Conservative where names do not tell: a decorated function (a decorator may
    register it) is always kept, and a module that may look its functions up at run time
    (`globals()`, `eval`, `sys.modules`, importing itself, `getattr` with a computed name on
    the module or on anything not a variable of the calling function...) is checked whole.
    A lookup on a function's own variable (`getattr(df, name)`) does not widen it."""
    if _looks_up_functions(tree, own):
        return tree
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef,
                                                                   ast.AsyncFunctionDef))}
    kept = {name for name, node in functions.items() if node.decorator_list} | {entry}
    todo: list[ast.AST] = [n for n in tree.body if n not in functions.values()]
    todo += [functions[name] for name in kept if name in functions]
    while todo:
        for node in ast.walk(todo.pop()):
            if isinstance(node, ast.Name) and node.id in functions and node.id not in kept:
                kept.add(node.id)
                todo.append(functions[node.id])
    body = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            or n.name in kept]
    return ast.Module(body=body, type_ignores=tree.type_ignores)


_LOOKUPS = frozenset({"globals", "locals", "vars", "eval", "exec", "__import__", "import_module",
                      "getmodule", "attrgetter", "methodcaller", "getattr", "__getattribute__"})
"""Names of callables through which code can reach a module's function without naming it."""

_NAMESPACES = frozenset({"__globals__", "f_globals", "f_locals", "modules"})
"""Attributes holding a module's namespace: a function's or a frame's globals, `sys.modules`."""


def _looks_up_functions(tree: ast.Module, own: str) -> bool:
    """Whether the module (named `own`) may reach its functions other than by their names:
    it imports itself (or `builtins`, or a lookup by name), refers to a namespace
    (`globals()`, `eval`, `sys.modules`, `f.__globals__`...), or calls `getattr` with a
    computed name on anything but a variable of its own function. `getattr(df, name)` on a
    local or a parameter, `model.eval()`, `net.modules()` do not count: what the function
    holds there came from code that named it, or from one of the lookups above. Known blind
    spot: a computed attribute of a function object held in a variable (its `__globals__`);
    the data gate refuses such a read when the code runs."""
    finder = _Lookups(own)
    finder.visit(tree)
    return finder.found


class _Lookups(ast.NodeVisitor):
    """`_looks_up_functions`' walk: the variables of the functions around each node are known,
    so that a lookup on one of them is told from a lookup on the module's own names."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.scopes: list[set[str]] = []  # variables of each enclosing function, innermost last
        self.found = False

    def visit(self, node: ast.AST) -> None:
        if not self.found:
            super().visit(node)

    def _local(self, node: ast.expr) -> bool:
        """Whether `node` is a variable of an enclosing function, or an attribute or item of
        one (`self.df`, `frames[0]`)."""
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return isinstance(node, ast.Name) and any(node.id in scope for scope in self.scopes)

    def _scoped(self, names: set[str], body: Sequence[ast.AST]) -> None:
        self.scopes.append(names)
        for node in body:
            self.visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        for outer in [*node.decorator_list, *args.defaults,
                      *(d for d in args.kw_defaults if d is not None), node.returns,
                      *(a.annotation for a in _parameters(args))]:
            if outer is not None:
                self.visit(outer)
        self._scoped(_variables(node), node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for outer in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
            self.visit(outer)
        self._scoped(_variables(node), [node.body])

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp
                       | ast.DictComp) -> None:
        self.scopes.append({n.id for gen in node.generators for n in ast.walk(gen.target)
                            if isinstance(n, ast.Name)})
        self.generic_visit(node)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            leaf = alias.name.rsplit(".", 1)[-1]
            if leaf == self.own or alias.name == "builtins":  # `import demo` in demo.py
                self.found = True

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.level  # `from . import x`: maybe itself
                or (node.module or "").rsplit(".", 1)[-1] == self.own
                or node.module == "builtins"
                or any(a.name in _LOOKUPS or a.name in _NAMESPACES for a in node.names)):
            self.found = True

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _LOOKUPS:  # `getattr` called as such is seen by visit_Call
            self.found = True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _NAMESPACES or (node.attr in _LOOKUPS and not self._local(node.value)):
            self.found = True
        self.visit(node.value)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "getattr":
            self._getattr(node)
        elif isinstance(func, ast.Attribute) and func.attr == "modules":
            self.visit(func.value)  # `net.modules()`: a method; `sys.modules` is never called
        elif isinstance(func, ast.Attribute) and func.attr in _LOOKUPS \
                and self._local(func.value):
            self.visit(func.value)  # `model.eval()`, `df.eval("a + b")`: a method of a variable
        else:
            self.visit(func)
        for arg in [*node.args, *node.keywords]:
            self.visit(arg)

    def _getattr(self, node: ast.Call) -> None:
        if len(node.args) < 2 or any(isinstance(a, ast.Starred) for a in node.args[:2]):
            self.found = True
            return
        obj, name = node.args[:2]
        attr = _literal_str(name)
        if attr is None:
            if not self._local(obj):
                self.found = True
        elif attr in _NAMESPACES or (attr in _LOOKUPS and not self._local(obj)):
            self.found = True


def _parameters(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *args.kwonlyargs,
            *(a for a in (args.vararg, args.kwarg) if a is not None)]


def _variables(func: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The local variables of a function: its parameters and the names its own body binds
    (not those of functions or classes nested in it), less those it declares global."""
    names = {a.arg for a in _parameters(func.args)}
    declared: set[str] = set()
    todo: list[ast.AST] = list(func.body) if isinstance(func.body, list) else [func.body]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        todo.extend(ast.iter_child_nodes(node))
    return names - declared


def _label_calls(tree: ast.Module, ctx_name: str) -> list[tuple[int, int]]:
    """Where `ctx.labels(...)` is called."""
    return sorted((node.lineno, node.col_offset + 1) for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "labels" and isinstance(node.func.value, ast.Name)
                  and node.func.value.id == ctx_name)


def _helper_trees(project: Project, config: TrainingConfig) -> list[tuple[str, ast.Module]]:
    """The repository modules the training imports (shared loaders), parsed."""
    out = []
    entry = (project.root / config.module_path).resolve()
    for path in repo_imports(project, config.module_path):
        if path == entry:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue  # the training itself will fail to import it, with a located error
        out.append((project.rel(path), tree))
    return out


def _helper_reads(project: Project, config: TrainingConfig,
                  parsed: ParsedTraining) -> list[tuple[str, ReadCall]]:
    """`ctx.read` calls in the repository modules the training imports (shared loaders)."""
    return [(rel, read) for rel, tree in _helper_trees(project, config)
            for read in _reads(tree, "ctx", Constants(tree, project.root / rel, project.root))]


def _literal_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _reads(tree: ast.Module, ctx_name: str, constants: Constants) -> list[ReadCall]:
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("read", "scan") and isinstance(node.func.value, ast.Name)
                and node.func.value.id == ctx_name):
            continue
        dataset_node = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "dataset"), None)
        columns_node = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "columns"), None)
        dataset = constants.string(dataset_node) if dataset_node is not None else None
        columns: tuple[tuple[str, int, int], ...] | None = None
        if columns_node is None or (isinstance(columns_node, ast.Constant)
                                    and columns_node.value is None):
            columns = ()  # every declared column: nothing to check
        else:
            folded = constants.strings(columns_node)
            columns = tuple(folded) if folded is not None else None
        dataset_at = ((dataset_node.lineno, dataset_node.col_offset + 1)
                      if dataset_node is not None else None)
        filters_node = next((k.value for k in node.keywords if k.arg == "filters"), None)
        out.append(ReadCall(node.lineno, node.col_offset + 1, dataset, columns, dataset_at,
                            node.func.attr, _filter_columns(filters_node)))
    return sorted(out, key=lambda r: (r.line, r.col))


def _filter_columns(node: ast.AST | None) -> tuple[tuple[str, int, int], ...]:
    """The literal column names of `filters=[("col", op, value), ...]` (or nested lists)."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return ()
    out = []
    for item in node.elts:
        conds = item.elts if isinstance(item, ast.List) else [item]
        for cond in conds:
            if isinstance(cond, (ast.Tuple, ast.List)) and cond.elts:
                name = _literal_str(cond.elts[0])
                if name is not None:
                    out.append((name, cond.elts[0].lineno, cond.elts[0].col_offset + 1))
    return tuple(out)


def _imports(tree: ast.Module) -> list[tuple[str, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                out.append((f"{node.module}.{alias.name}", node.lineno, node.col_offset + 1))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno, node.col_offset + 1) for alias in node.names)
    return out


def check_training(project: Project, training: str, config: TrainingConfig,
                   res: Resolved, parsed: ParsedTraining | None = None) -> list[Diagnostic]:
    """Every static problem of `training` against environment `res`."""
    parsed = parsed or parse_training(project, training, config)
    env = res.env
    problems = list(parsed.problems)
    reads = [(parsed.path, read) for read in parsed.reads]
    if parsed.tree is not None:
        reads += _helper_reads(project, config, parsed)
    for rel, read in reads:
        call = f"ctx.{read.method}"
        if read.dataset is None:
            problems.append(Diagnostic("BE105", f"{call} with a non-literal dataset name cannot "
                                       "be checked statically", rel, read.line, read.col,
                                       Severity.WARNING))
            continue
        ds = env.datasets.get(read.dataset)
        if ds is None:
            hint = did_you_mean(read.dataset, env.datasets)
            line, col = read.dataset_at or (read.line, read.col)  # at the string literal
            problems.append(Diagnostic(
                "BE101", f"dataset '{read.dataset}' is not declared in environment {env.name}",
                rel, line, col,
                hints=(hint or f"declared datasets: {', '.join(sorted(env.datasets))}",),
                subject=read.dataset))
            continue
        if read.dataset == env.evaluation.dataset:
            line, col = read.dataset_at or (read.line, read.col)
            problems.append(Diagnostic(
                "BE108", f"dataset '{read.dataset}' holds the evaluation rows of environment "
                f"{env.name}: training code cannot read it", rel, line, col,
                hints=("the build scores the returned model on it; train on the other "
                       "datasets",)))
            continue
        if read.columns is None:
            problems.append(Diagnostic("BE105", f"{call} without a literal `columns=[...]` list "
                                       "cannot be checked statically", rel, read.line, read.col,
                                       Severity.WARNING))
            continue
        for column, line, col in read.columns + read.filter_columns:
            if column not in ds.columns:
                hint = did_you_mean(column, ds.columns)
                problems.append(Diagnostic(
                    "BE102", f"column '{column}' is not in dataset '{read.dataset}' of "
                    f"environment {env.name}", rel, line, col, hints=(hint,) if hint else ()))
    problems.extend(_label_problems(project, config, parsed, res))
    if env.serving is not None:
        problems.extend(_import_problems(parsed, res))
    return problems


# Model classes the converters turn into tree ensemble operators (onnx stack).
_TREE_CLASSES = ("sklearn.ensemble.*Forest*", "sklearn.ensemble.*Trees*",
                 "sklearn.ensemble.*GradientBoosting*", "sklearn.tree.*", "xgboost.XGB*",
                 "xgboost.sklearn.XGB*", "lightgbm.LGBM*", "lightgbm.sklearn.LGBM*")
_TREE_OPERATORS = ("ai.onnx.ml:TreeEnsembleClassifier", "ai.onnx.ml:TreeEnsembleRegressor",
                   "ai.onnx.ml:TreeEnsemble")


def _import_problems(parsed: ParsedTraining, res: Resolved) -> list[Diagnostic]:
    """Early warnings from imports: a model class outside `serving.ops` (sklearn stack), a
    class that converts to operators outside it (onnx stack: tree ensembles), or PyTorch on
    a stack that cannot serve it."""
    env = res.env
    serving = env.serving
    assert serving is not None
    out = []
    for name, line, col in parsed.imports:
        leaf = name.rsplit(".", 1)[-1]
        message = None
        if name.split(".")[0] == "torch" and serving.stack == "sklearn":
            message = (f"{name} is imported, and serving stack 'sklearn' of environment "
                       f"{env.name} cannot serve a PyTorch module (BE413)")
        elif not leaf[:1].isupper() or name.startswith(_NOT_MODEL_PARTS):
            continue
        elif serving.stack == "sklearn" and name.startswith("sklearn.") \
                and not op_allowed(name, serving.ops):
            message = (f"{leaf} is imported but serving stack 'sklearn' of environment "
                       f"{env.name} does not list {name} in serving.ops")
        elif serving.stack == "onnx" and op_allowed(name, list(_TREE_CLASSES)) and not any(
                op_allowed(op, serving.ops) for op in _TREE_OPERATORS):
            message = (f"{leaf} is imported; it converts to ONNX tree ensemble operators "
                       f"({_TREE_OPERATORS[0]}, ...), which serving.ops of environment "
                       f"{env.name} does not allow")
        if message:
            out.append(Diagnostic("BE106", message, parsed.path, line, col, Severity.WARNING,
                                  hints=("the verify stage will refuse the model if it "
                                         "contains it",)))
    return out


def _label_problems(project: Project, config: TrainingConfig, parsed: ParsedTraining,
                    res: Resolved) -> list[Diagnostic]:
    """`ctx.labels()` needs a label set; a label set's environment needs `ctx.labels()`."""
    if parsed.tree is None:
        return []
    env = res.env
    calls = [(parsed.path, line, col) for line, col in parsed.label_calls]
    calls += [(rel, line, col) for rel, tree in _helper_trees(project, config)
              for line, col in _label_calls(tree, "ctx")]
    label_set = env.label_set()
    if label_set is None:
        return [Diagnostic(
            "BE864", f"ctx.labels() needs a label set, but environment {env.name} takes its "
            "label from " + (f"column '{env.label.dataset}.{env.label.column}'"
                             if env.label is not None else "nowhere (it declares no label)"),
            rel, line, col, hints=("read the label column with ctx.read, or build for an "
                                   "environment whose `label:` names a label set",))
                for rel, line, col in calls]
    if not calls:
        assert env.label is not None
        return [Diagnostic(
            "BE865", f"environment {env.name} takes its label from label set "
            f"'{env.label.labels}', but the training never calls ctx.labels(): the build will "
            f"score its model on those labels", parsed.path, parsed.entry_line, None,
            Severity.WARNING, hints=("fit on `y = ctx.labels()`, aligned with "
                                     f"ctx.read('{label_set.dataset}', ...)",))]
    return []
