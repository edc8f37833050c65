"""Applying labeling functions, inside the build's hermetic process.

For each file of the label set's dataset with votes still missing, the file is scanned through
the data gate (pinned to that file, verified, audited when restricted) in batches of the
columns the missing functions declare, and each function is called once per batch with a
DataFrame of exactly its own columns. What it returns -- a Series, array or list, one class or
None per row; a Series's votes go to the rows its index names, as pandas aligns -- is checked
(length, classes of the taxonomy) and kept as a dictionary-encoded column; a file's votes are
written only when every batch of it succeeded. The module is imported under its dotted name,
so it imports its package's modules relatively, as a transform's does. Problems name the
function and its line and the file, and never quote a value of a restricted dataset: a
function that reads a column it did not declare fails with the column's name (BE871), one
that raises with its exception type (BE872), a wrong length or type is BE873, a class outside
the taxonomy BE874.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from buildenv import LABELING_FUNCTION
from buildenv.data.gate.errors import GateError
from buildenv.data.keys import key_text
from buildenv.data.lock.derived import narrowed
from buildenv.data.lock.manifest import Manifest
from buildenv.labels.matrix import write_array
from buildenv.training.confinement import refused, swallowed
from buildenv.training.context import BuildContext
from buildenv.training.derive_run import scoped_pins
from buildenv.training.user_code import diag as _diag
from buildenv.training.user_code import load_module, type_name
from buildenv.training.user_frames import exception_frame as _user_frame

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment

__all__ = ["run_functions_job"]

BATCH_ROWS = 262_144


class _Failed(Exception):
    def __init__(self, diagnostic: dict[str, Any]):
        super().__init__(diagnostic["message"])
        self.diagnostic = diagnostic


def run_functions_job(job: dict[str, Any], env: Environment, project: Project,
                      pins: dict[str, str], manifests: dict[str, Manifest], root: Path,
                      own: Path, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply the missing functions of one label set to each file listed; diagnostics of the
    first failure."""
    dataset = job["dataset"]
    view = narrowed(env, [dataset])
    restricted = view.restricted(dataset)
    try:
        module = load_module(root, job["module"])
    except Exception as exc:
        denied = refused(exc, restricted)
        if denied is not None:
            return [denied]
        path, line, _ = _user_frame(exc, root, own)
        return [_diag("BE872", f"label set '{job['label_set']}': importing {job['module']} "
                      f"raised {type_name(exc, restricted)}" + ("" if restricted else f": {exc}"),
                      path or job["module"], line)]
    functions = {name: fn for name in dir(module)
                 if callable(fn := getattr(module, name)) and hasattr(fn, LABELING_FUNCTION)}
    unseen = _unseen(functions, module.__name__, job.get("declared"))
    if unseen:
        return [_diag("BE870", f"label set '{job['label_set']}': {job['module']} defines "
                      f"labeling function(s) {', '.join(unseen)} in a way the static check "
                      "does not see (the decorator under another name), so they would never "
                      "vote", job["module"], functions[unseen[0]].__code__.co_firstlineno,
                      hints=("decorate each one `@buildenv.labeling_function(columns=[...])`, "
                             "or `@NAME(...)` after `from buildenv import labeling_function as "
                             "NAME`",))]
    imported = _imported(functions, module.__name__, job.get("declared"))
    if imported:
        first = functions[imported[0]]
        return [_diag("BE870", f"label set '{job['label_set']}': {job['module']} imports "
                      f"labeling function(s) {', '.join(imported)} (from {first.__module__}): "
                      "a set's functions are the ones its module defines, so they would "
                      "never vote here", job["module"], None,
                      hints=("define a rule here that calls it, or import its module "
                             f"(`import {first.__module__}`) when it is only called",))]
    classes = pa.array(job["classes"], pa.string())
    for item in job["files"]:
        wanted = list(item["functions"])
        absent = [n for n in wanted if n not in functions]
        if absent:
            return [_diag("BE870", f"label set '{job['label_set']}': {job['module']} defines no "
                          f"labeling function {', '.join(absent)} when imported", job["module"],
                          None)]
        columns = list(dict.fromkeys(c for n in wanted for c in _columns(functions[n])))
        if item.get("keys_out"):
            columns = list(dict.fromkeys([*columns, job["key"]]))
        scoped, scoped_manifests = scoped_pins(pins, manifests, dataset, item.get("entry"))
        ctx = BuildContext(view, 0, project, scoped, None, scoped_manifests, purpose="label")
        started = time.perf_counter()
        try:
            votes, keys = _apply(ctx, dataset, columns, wanted, functions, classes, job, item,
                                 restricted, root, own)
        except _Failed as exc:
            return [exc.diagnostic]
        for name in wanted:
            write_array(Path(item["votes_out"][name]), votes[name])
            outputs[item["votes_out"][name]] = {"rows": len(votes[name])}
        if item.get("keys_out"):
            assert keys is not None
            write_array(Path(item["keys_out"]), keys)
            outputs[item["keys_out"]] = {"rows": len(keys)}
        outputs.setdefault("_seconds", 0.0)
        outputs["_seconds"] += time.perf_counter() - started
    return []


def _unseen(functions: dict[str, Any], module: str, declared: list[str] | None) -> list[str]:
    """Functions the module itself defines and marks, that the static parse did not find: the
    build would apply only those it found."""
    if declared is None:
        return []
    return sorted(name for name, fn in functions.items() if name not in declared
                  and getattr(fn, "__module__", None) == module
                  and getattr(fn, "__name__", None) == name and hasattr(fn, "__code__"))


def _imported(functions: dict[str, Any], module: str, declared: list[str] | None
              ) -> list[str]:
    """Labeling functions another module defines, bound in this one by an import: the static
    parse takes a module's own functions, so they would not vote."""
    if declared is None:
        return []
    return sorted(name for name, fn in functions.items() if name not in declared
                  and getattr(fn, "__module__", None) not in (None, module))


def _columns(fn: Any) -> list[str]:
    return list(getattr(fn, LABELING_FUNCTION)["columns"])


def _apply(ctx: Any, dataset: str, columns: list[str], wanted: list[str],
           functions: dict[str, Any], classes: pa.Array, job: dict[str, Any],
           item: dict[str, Any], restricted: bool, root: Path, own: Path
           ) -> tuple[dict[str, pa.Array], pa.Array | None]:
    where = f" (file {item['input_path'] or ctx.env.datasets[dataset].uri})"
    known = ctx.env.datasets[dataset].columns
    parts: dict[str, list[pa.Array]] = {n: [] for n in wanted}
    key_parts: list[pa.Array] = []
    try:
        for batch in ctx.scan(dataset, columns=columns, batch_rows=BATCH_ROWS):
            for name in wanted:
                parts[name].append(_call(functions[name], name, batch, classes, job, where,
                                         restricted, root, own, known))
            if item.get("keys_out"):
                key_parts.append(key_text(pa.array(batch[job["key"]])))
        ctx.finish()
    except GateError as exc:
        raise _Failed(exc.diagnostic.to_json()) from None
    if ctx.gate_errors:
        raise _Failed(ctx.gate_errors[0].diagnostic.to_json())
    dictionary = classes
    votes = {n: (pa.chunked_array(p, pa.dictionary(pa.int16(), pa.string())).combine_chunks()
                 if p else pa.DictionaryArray.from_arrays(pa.array([], pa.int16()), dictionary))
             for n, p in parts.items()}
    keys = (pa.concat_arrays(key_parts) if key_parts else pa.array([], pa.string())) \
        if item.get("keys_out") else None
    return votes, keys


_NOT_IN_INDEX = re.compile(r"^\[(.*)\] not in index$")


def _missing_columns(exc: KeyError) -> list[str]:
    """The columns a KeyError says are missing: `batch["c"]` raises KeyError('c'), and
    `batch[["a", "c"]]` KeyError("['c'] not in index") (pandas); else none."""
    key = exc.args[0] if len(exc.args) == 1 else None
    if not isinstance(key, str):
        return []
    listed = _NOT_IN_INDEX.match(key)
    if listed is None:
        return [key]
    try:
        names = ast.literal_eval(f"[{listed.group(1)}]")
    except (ValueError, SyntaxError):
        return []
    return names if names and all(isinstance(n, str) for n in names) else []


def _call(fn: Any, name: str, batch: Any, classes: pa.Array, job: dict[str, Any], where: str,
          restricted: bool, root: Path, own: Path, known: Any) -> pa.Array:
    """One function on one batch: its votes as class indices into the taxonomy."""
    module = job["module"]
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
    declared = _columns(fn)
    what = f"labeling function '{name}'"
    try:
        result = fn(batch[declared])
    except KeyError as exc:
        columns = _missing_columns(exc)
        # only columns of the dataset: any other key may be a row value (a dict lookup)
        if columns and all(c not in declared and c in known for c in columns):
            path, at, _ = _user_frame(exc, root, own)
            named = ", ".join(f"'{c}'" for c in columns)
            raise _Failed(_diag("BE871", f"{what} reads column{'s' * (len(columns) > 1)} "
                                f"{named}, which it does not declare{where}", path or module,
                                at or line, [f"add {named} to its `columns=[...]`"])) from None
        raise _Failed(_raised(exc, what, where, restricted, root, own, module, line)) from None
    except Exception as exc:
        denied = refused(exc, restricted, where)
        if denied is not None:  # the sandbox refused it
            raise _Failed(denied) from None
        raise _Failed(_raised(exc, what, where, restricted, root, own, module, line)) from None
    bypass = swallowed(restricted, where)
    if bypass is not None:  # caught by the function: it tried to read data around the gate
        raise _Failed(bypass)
    if result is None or isinstance(result, (str, bytes)) or np.isscalar(result):
        # a text is a sequence to Arrow: "comedy" would be six one-letter votes
        raise _Failed(_diag("BE873", f"{what} returned "
                            + ("None" if result is None else
                               f"one {type_name(result, restricted)}")
                            + f", not one value per row{where}", module, line,
                            ["return a Series, array or list as long as the batch: one class "
                             "or None per row (`np.where(condition, \"class\", None)`)"]))
    if isinstance(result, (pd.DataFrame, pa.Table, pa.RecordBatch)):
        raise _Failed(_diag("BE873", f"{what} returned a {type(result).__name__} of "
                            f"{result.shape[1]} column(s), not one value per row{where}",
                            module, line, ["return one column of it (`frame[\"label\"]`): one "
                                           "class or None per row"]))
    if isinstance(result, pd.Series):
        result = _aligned(result, batch, what, where, module, line)
    try:
        values = pa.array(result, type=pa.string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, KeyError):  # not votes, whatever it is
        kind = type_name(result, restricted)
        dtype = getattr(result, "dtype", None)
        if isinstance(dtype, (np.dtype, pd.api.extensions.ExtensionDtype)):
            kind += f" of {dtype}"  # a type's name, never a value
        raise _Failed(_diag("BE873", f"{what} returned {kind} values that are not class names "
                            f"(text, or None to abstain){where}", module, line,
                            ["return one class (a string of the taxonomy) or None per row"])
                      ) from None
    if len(values) != len(batch):
        raise _Failed(_diag("BE873", f"{what} returned {len(values):,} values for a batch of "
                            f"{len(batch):,} rows{where}", module, line,
                            ["return one value per row: it is vectorised, not called per row"]))
    codes = pc.index_in(values, value_set=classes)
    bad = pc.and_(values.is_valid(), codes.is_null())
    if pc.any(bad).as_py():
        shown = "" if restricted else \
            f": {', '.join(repr(v) for v in pc.unique(values.filter(bad)).to_pylist()[:5])}"
        raise _Failed(_diag("BE874", f"{what} returned {int(pc.sum(bad).as_py()):,} vote(s) "
                            f"for classes outside taxonomy v{job['taxonomy_version']}{shown}"
                            f"{where}", module, line,
                            ["return a class of the taxonomy, or None to abstain"]))
    indices = pc.cast(codes, pa.int16())
    return pa.DictionaryArray.from_arrays(indices, classes)


def _aligned(result: pd.Series, batch: pd.DataFrame, what: str, where: str, module: str,
             line: int | None) -> pd.Series:
    """A Series votes for the rows its index names, as pandas aligns: one holding the batch's
    rows in another order (sorted, grouped, sampled) is put back in the batch's order; taken by
    position, its votes would land on other rows. One indexed otherwise (made from an array:
    a fresh 0..n-1) is taken by position, as an array is."""
    index, rows = result.index, batch.index
    if index.equals(rows) or not rows.is_unique:
        return result
    if len(index) == len(rows) and index.is_unique and bool(index.isin(rows).all()):
        return result.reindex(rows)
    if len(index) < len(rows) and index.is_unique and bool(index.isin(rows).all()):
        raise _Failed(_diag("BE873", f"{what} returned a Series of {len(index):,} of the "
                            f"batch's {len(rows):,} rows{where}", module, line,
                            ["return a value for every row: `.reindex(batch.index)` makes the "
                             "rows it leaves out abstain"]))
    return result


def _raised(exc: BaseException, what: str, where: str, restricted: bool, root: Path, own: Path,
            module: str, line: int | None) -> dict[str, Any]:
    path, at, trail = _user_frame(exc, root, own)
    message = f"{what} raised {type_name(exc, restricted)}" + ("" if restricted else f": {exc}")
    if restricted:
        message += " (message withheld: the dataset is restricted)"
    return _diag("BE872", message + where, path or module, at or line,
                 [f"called from {t}" for t in trail[:-1]])

