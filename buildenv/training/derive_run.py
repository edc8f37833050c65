"""Running a derived dataset's transform, inside the build's hermetic process.

For each file of the first input that has no output yet, the transform is called with a
`TransformContext`: a `BuildContext` over an environment narrowed to the transform's inputs,
whose first input is pinned to that one file (a one-file manifest), so `ctx.read`/`ctx.scan`
return that file's rows, verified and audited like any read; the other inputs are read whole.
`ctx.file` and `ctx.partition` say which file it is. What the transform returns or yields
(pandas DataFrames, Arrow tables or record batches) must hold exactly the declared columns
(partition columns may be left out: they come from the path; when present they must hold the
path's value). Each column is cast to its declared type; an aggregation's rows counting fewer
than the minimum group size are withheld. The output is written as one Parquet file per input
file, the same way every time. Problems name the transform, its line and the input file, and
never quote a value read from a restricted dataset.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from buildenv.data.gate import handover
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import arrow_type
from buildenv.data.gate.partitioned_read import partition_scalar, typed_partition_value
from buildenv.data.lock.derived import narrowed
from buildenv.data.lock.manifest import FileEntry, Manifest
from buildenv.training.confinement import refused, swallowed
from buildenv.training.context import BuildContext, ForbiddenRead
from buildenv.training.env_view import EnvironmentView
from buildenv.training.user_code import diag as _diag
from buildenv.training.user_code import load_entry as _load_entry
from buildenv.training.user_code import type_name
from buildenv.training.user_frames import exception_frame as _user_frame

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project
    from buildenv.data.gate.filters import Filters
    from buildenv.env.spec import Environment

__all__ = ["TransformContext", "run_transform_job", "scoped_pins"]


def scoped_pins(pins: dict[str, str], manifests: dict[str, Manifest], dataset: str,
                entry: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, Manifest]]:
    """Pins under which `dataset` is one file: its manifest entry (or, unpartitioned, the
    whole file as pinned)."""
    pins, manifests = dict(pins), dict(manifests)
    if entry is not None:
        whole = manifests[dataset]
        one = Manifest((FileEntry.from_json(entry, whole.withheld),), whole.partitions,
                       withheld=whole.withheld)
        pins[dataset], manifests[dataset] = one.digest, one
    return pins, manifests


class TransformContext(BuildContext):
    """`ctx` of a transform: `read`/`scan` over its inputs, the first scoped to one file."""

    def __init__(self, env: Environment, project: Project, pins: dict[str, str],
                 manifests: dict[str, Manifest], file: str, partition: dict[str, Any],
                 derived: str = "", inputs: tuple[str, ...] = ()):
        super().__init__(env, 0, project, pins, None, manifests, purpose="derive")
        self.file = file
        """The first input's file being transformed (relative to its uri; "" for one file)."""
        self.partition = partition
        """Its hive partition values, typed as declared."""
        self._derived, self._inputs = derived, inputs

    def _request(self, dataset: str, columns: Any, format: str, filters: Any
                 ) -> tuple[list[str], Filters | None]:
        if self._inputs and dataset not in self._inputs:  # what the static check says too
            raise ForbiddenRead(f"dataset '{dataset}' is not an input of derived dataset "
                                f"'{self._derived}' (inputs: {', '.join(self._inputs)})")
        return super()._request(dataset, columns, format, filters)


class TransformError(Exception):
    def __init__(self, diagnostic: dict[str, Any]):
        super().__init__(diagnostic["message"])
        self.diagnostic = diagnostic


def run_transform_job(job: dict[str, Any], env: Environment, project: Project,
                      pins: dict[str, str], manifests: dict[str, Manifest], root: Path,
                      own: Path, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Make every output file of one derived dataset's job; diagnostics of the first failure."""
    module_path, function = job["transform"].rsplit(":", 1)
    inputs = list(job["inputs"])
    # the build's description is of the inputs' environment already (`sources_runner`)
    view = env if isinstance(env, EnvironmentView) else narrowed(env, inputs)
    restricted = any(view.restricted(n) for n in inputs)
    try:
        fn = _load_entry(root, module_path, function)
    except Exception as exc:
        denied = refused(exc, restricted)
        if denied is not None:
            return [denied]
        path, line, _ = _user_frame(exc, root, own)
        return [_diag("BE340", f"derived dataset '{job['dataset']}': importing {module_path} "
                      f"raised {type(exc).__name__}: {exc}", path or module_path, line)]
    reports = _reports(job.get("reports"))
    try:
        return _run_files(fn, job, env, view, project, pins, manifests, root, own, outputs,
                          restricted, reports)
    finally:
        if reports is not None:
            os.close(reports)


def _run_files(fn: Any, job: dict[str, Any], env: Environment, view: Environment,
               project: Project, pins: dict[str, str], manifests: dict[str, Manifest],
               root: Path, own: Path, outputs: dict[str, Any], restricted: bool,
               reports: int | None) -> list[dict[str, Any]]:
    first = job["inputs"][0]
    spec = env.datasets[first]
    for index in _indices(job):
        item = job["files"][index]
        # the same seeds for every file: its output is the same bytes whether it is built
        # alone, after other files, or in another of the build's processes
        random.seed(0)
        np.random.seed(0)
        values = {k: partition_scalar(v, spec.columns[k]).as_py()
                  for k, v in (item.get("values") or {}).items()}
        scoped, scoped_manifests = scoped_pins(pins, manifests, first, item.get("entry"))
        ctx = TransformContext(view, project, scoped, scoped_manifests, item["input_path"],
                               values, job["dataset"], tuple(job["inputs"]))
        started = time.perf_counter()
        try:
            table, withheld = _run_one(fn, ctx, job, item, restricted, root, own)
        except TransformError as exc:
            outputs["_failed"] = index
            return [exc.diagnostic]
        _write(table, Path(item["out"]))
        outputs[item["out"]] = {"rows": table.num_rows, "withheld": withheld,
                                "seconds": round(time.perf_counter() - started, 6)}
        if reports is not None:
            _report(reports, index, withheld)
    return []


def _indices(job: dict[str, Any]) -> Iterator[int]:
    """The job's files to build, in order: all of them, or (`claim`: one of several processes
    building the dataset, `compile.derive_claims`) each one the build hands out when asked."""
    if not job.get("claim"):
        yield from range(len(job["files"]))
        return
    while True:
        index = handover.ask("claim").get("index")
        if not isinstance(index, int) or not 0 <= index < len(job["files"]):
            return
        yield index


def _reports(path: str | None) -> int | None:
    """The write end of the build's report pipe (`compile.derive_reports`), opened before any
    transform runs; None without one (every output is then stored after this process
    exits)."""
    if not path:
        return None
    try:  # non-blocking: the build is already reading, and this process never waits for it
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def _report(fd: int, index: int, withheld: int) -> None:
    """Tell the build output `index` is written: it copies and hashes it while the next file's
    transform runs. One line, shorter than a pipe's atomic write; a full pipe or a build gone
    loses the line, and the output is stored after this process exits."""
    try:
        os.write(fd, f"{index} {withheld}\n".encode())
    except OSError:
        pass


def _run_one(fn: Any, ctx: TransformContext, job: dict[str, Any], item: dict[str, Any],
             restricted: bool, root: Path, own: Path) -> tuple[pa.Table, int]:
    where = f" (input file {item['input_path']})" if item["input_path"] else ""
    name = f"transform {job['transform']} of dataset '{job['dataset']}'"
    indexed: set[str] = set()
    declared = {c for c, _ in job["columns"]}

    def named(column: str) -> str:
        """A column's name for a message: one the transform made itself (a pivot's) may be a
        value it read, so on restricted data only declared names are shown."""
        if restricted and column not in declared:
            return "an undeclared column (its name withheld: the input is restricted)"
        return repr(column)

    try:
        try:
            produced = fn(ctx)
            parts = list(_pieces(produced, indexed, named))
        finally:
            ctx.finish()
    except _Unconvertible as exc:
        detail = "" if restricted or not exc.detail else f": {exc.detail}"
        raise TransformError(_diag(exc.code, f"{name} returned {exc.what}{detail}{where}",
                                   job["transform"].rsplit(":", 1)[0], None, [exc.hint])
                             ) from None
    except GateError as exc:
        raise TransformError(exc.diagnostic.to_json()) from None
    except ForbiddenRead as exc:
        path, line, _ = _user_frame(exc, root, own)
        raise TransformError(_diag("BE343", f"{name}: {exc}{where}", path, line)) from None
    except _NotData as exc:
        hints = ["return or yield pandas DataFrames, Arrow tables or record batches of the "
                 "declared columns"]
        if "Series" in str(exc):
            hints.append("a Series is one column, its keys in the index: "
                         "`.reset_index(name=\"<its column>\")` makes a DataFrame of it")
        raise TransformError(_diag("BE341", f"{name} returned {exc}{where}",
                                   job["transform"].rsplit(":", 1)[0], None, hints)) from None
    except Exception as exc:
        if ctx.gate_errors:
            raise TransformError(ctx.gate_errors[0].diagnostic.to_json()) from None
        denied = refused(exc, restricted, where)
        if denied is not None:  # the sandbox refused it
            raise TransformError(denied) from None
        path, line, trail = _user_frame(exc, root, own)
        message = f"{name} raised {type(exc).__name__}: {exc}".strip()
        if restricted:
            message = (f"{name} raised {type_name(exc, True)} (message withheld: it reads "
                       "restricted data)")
        raise TransformError(_diag("BE340", message + where, path, line,
                                   [f"called from {t}" for t in trail[:-1]])) from None
    if ctx.gate_errors:
        raise TransformError(ctx.gate_errors[0].diagnostic.to_json())
    bypass = swallowed(restricted, where)
    if bypass is not None:  # caught by the transform: it tried to read data around the gate
        raise TransformError(bypass)
    return _shape(parts, job, item, restricted, name, where, indexed)


class _NotData(Exception):
    pass


class _Unconvertible(Exception):
    """A DataFrame Arrow cannot take as a table: `what` it returned, Arrow's `detail` (shown
    only when no restricted data was read), the diagnostic's code and hint."""

    def __init__(self, code: str, what: str, detail: str, hint: str):
        super().__init__(what)
        self.code, self.what, self.detail, self.hint = code, what, detail, hint


def _pieces(produced: Any, indexed: set[str], named: Any = repr) -> Iterable[pa.Table]:
    """What the transform produced, as Arrow tables; `indexed` gathers the names of the
    DataFrames' indexes (left out of the tables: a `groupby` result's keys are there);
    `named` spells a column's name in a message."""
    if isinstance(produced, (pd.DataFrame, pa.Table, pa.RecordBatch)):
        produced = [produced]
    elif isinstance(produced, (pd.Series, pd.Index, pa.Array, pa.ChunkedArray)):
        # iterable, but of values: "a piece of type int" would name the first value's type
        raise _NotData(f"a {'pandas ' if isinstance(produced, pd.Series) else ''}"
                       f"{type(produced).__name__}, not a table")
    elif produced is None or isinstance(produced, (str, bytes, dict)) or \
            not isinstance(produced, Iterable):
        raise _NotData(type(produced).__name__)
    for piece in produced:
        if isinstance(piece, (pd.DataFrame, pa.Table, pa.RecordBatch)) and \
                not piece.shape[0] and not piece.shape[1]:
            continue  # `pd.DataFrame()`: nothing, like an empty frame of the columns
        if isinstance(piece, pd.DataFrame):
            indexed.update(str(n) for n in piece.index.names if n is not None)
            yield _from_pandas(piece, named)
        elif isinstance(piece, pa.RecordBatch):
            yield pa.Table.from_batches([piece])
        elif isinstance(piece, pa.Table):
            yield piece
        else:
            raise _NotData(f"a piece of type {type(piece).__name__}"
                           + (" (pandas Series)" if isinstance(piece, pd.Series) else ""))


def _from_pandas(frame: pd.DataFrame, named: Any = repr) -> pa.Table:
    """The frame as an Arrow table, without its index; a column Arrow cannot type (values of
    several kinds in one `object` column) or a name used twice is named (`named`)."""
    if isinstance(frame.columns, pd.MultiIndex):  # `agg({"x": ["sum", "count"]})`
        raise _Unconvertible("BE341", f"columns in {frame.columns.nlevels} levels (a pandas "
                             "MultiIndex)", "", "name each column once: named aggregation "
                             "(`agg(total=(\"x\", \"sum\"))`), or flatten the levels")
    names = [str(c) for c in frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _Unconvertible("BE341", f"column{'s' * (len(twice) > 1)} "
                             f"{', '.join(map(named, twice))} more than once", "",
                             "give each column one name")
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        failed = str(exc)
    for column, label in zip(names, frame.columns):
        try:
            pa.array(frame[label], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise _Unconvertible("BE342", f"column {named(column)} ({frame[label].dtype}) "
                                 "that does not convert to Arrow", str(exc).splitlines()[0],
                                 "give each column values of one type (an `object` column "
                                 "mixing numbers and text converts to neither)") from None
    raise _Unconvertible("BE342", "a DataFrame that does not convert to Arrow",
                         failed.splitlines()[0] if failed else "",
                         "return columns of plain types (numbers, text, dates, booleans)")


def _shape(parts: list[pa.Table], job: dict[str, Any], item: dict[str, Any], restricted: bool,
           name: str, where: str, indexed: set[str] | None = None) -> tuple[pa.Table, int]:
    """One table of the declared columns (partition columns dropped), cast as declared; an
    aggregation's small groups withheld."""
    declared = {c: dtype for c, dtype in job["columns"]}
    partitions = set(job["partitions"])
    module = job["transform"].rsplit(":", 1)[0]
    columns: dict[str, list[pa.ChunkedArray]] = {c: [] for c in declared if c not in partitions}
    for part in parts:
        names = set(part.column_names)
        extra = sorted(names - set(declared))
        missing = sorted(set(columns) - names)
        if extra or missing:
            # names the transform made (a pivot's) may be values read: counted when restricted
            shown = (f"{len(extra)} undeclared, names withheld: the input is restricted"
                     if restricted else f"undeclared: {', '.join(extra)}")
            said = "; ".join(x for x in (shown if extra else "",
                                         f"missing: {', '.join(missing)}" if missing else "")
                             if x)
            hints = []
            in_index = [c for c in missing if c in (indexed or ())]
            if in_index:
                hints.append(f"{', '.join(in_index)} {'is' if len(in_index) == 1 else 'are'} "
                             "the DataFrame's index, not a column: `.reset_index()` (or "
                             "`groupby(..., as_index=False)`) makes a column of it")
            elif missing:
                hints.append("return every declared column" + (
                    " (partition columns may be left out: they come from the path)"
                    if partitions else ""))
            if extra:
                hints.append("declare every column it returns under `columns`")
            raise TransformError(_diag("BE341", f"{name} returned other columns than declared "
                                       f"({said}){where}", module, None, hints))
        for column in names & partitions:
            _check_partition(part.column(column), column, item, declared[column], name, where,
                             restricted, module)
        for column in columns:
            columns[column].append(_cast(part.column(column), column, declared[column], name,
                                         where, restricted, module))
    arrays = {c: (pa.chunked_array([a for p in parts_ for a in p.chunks],
                                   arrow_type(declared[c]))
                  if parts_ else pa.chunked_array([], arrow_type(declared[c])))
              for c, parts_ in columns.items()}
    table = pa.table(arrays)
    withheld = 0
    aggregation = job.get("aggregation")
    if aggregation is not None:
        counts = table.column(aggregation["count"])
        keep = pc.fill_null(pc.greater_equal(counts, aggregation["min_group_size"]), False)
        withheld = table.num_rows - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    return table.combine_chunks(), withheld


def _cast(column: pa.ChunkedArray, name: str, dtype: str, what: str, where: str,
          restricted: bool, module: str) -> pa.ChunkedArray:
    target = arrow_type(dtype)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if column.type == target:
        return column
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        detail = "" if restricted else f": {str(exc).splitlines()[0]}"
        hints = []
        if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(target) and \
                column.type.unit == "ns":
            hints.append("timestamps are kept to the microsecond: round them first "
                         "(`.dt.floor(\"us\")`)")
        raise TransformError(_diag("BE342", f"{what}: column '{name}' ({column.type}) does not "
                                   f"convert to its declared {dtype}{detail}{where}", module,
                                   None, hints)) from None


def _check_partition(column: pa.ChunkedArray, name: str, item: dict[str, Any], dtype: str,
                     what: str, where: str, restricted: bool, module: str) -> None:
    """A partition column the transform returns must hold the path's value in every row."""
    if not len(column):
        return
    text = (item.get("values") or {}).get(name)
    expected = typed_partition_value(text, dtype)
    typed = _cast(column, name, dtype, what, where, restricted, module)
    same = (typed.null_count == len(typed)) if text is None else \
        bool(pc.all(pc.fill_null(pc.equal(typed, expected), False)).as_py())
    if not same:
        raise TransformError(_diag("BE346", f"{what}: partition column '{name}' holds other "
                                   f"values than its file's path ({name}={text}){where}",
                                   module, None, ["leave partition columns out of the output: "
                                                  "they come from the path"]))


def _write(table: pa.Table, path: Path) -> None:
    """The same bytes for the same rows: no pandas metadata, fixed options. Written to an
    Arrow file handle rather than a path: the same bytes, without pyarrow resolving a
    filesystem for every output file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink:
        pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd",
                       row_group_size=1 << 20)
    os.replace(tmp, path)
