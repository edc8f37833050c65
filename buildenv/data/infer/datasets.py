"""`buildenv init --data`: an environment's datasets inferred from their files.

Each data file (or directory of Parquet files, hive-partitioned or not) is read once through
the data gate, unpinned (there is no lock yet), as a dataset of a provisional environment:
CSV with every column declared `string` (the text is classified by `profile.TextProfiler`),
Parquet with its stored types. So the gate's guarantees hold here too: decoding errors of a
restricted dataset name columns and rows, never values, and the read of a restricted dataset is
recorded in the audit log (purpose `init`). Streaming in batches keeps memory bounded whatever
the size of the file.

What is inferred, and how a column's facts become its declaration, is `declare` (and
docs/commands.md, `buildenv init`): the file decides dtypes, nulls, ranges (rounded outward),
domains, keys and partitions; for a restricted dataset no value is written.
"""

from __future__ import annotations

import codecs
import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa

from buildenv.core import progress
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.data.infer.profile import ColumnProfile, Slots, TextProfiler, TypedProfiler
from buildenv.data.lock.manifest import (
    HIVE_NULL,
    PARQUET_SUFFIXES,
    ManifestError,
    list_files,
)
from buildenv.data.storage import locate
from buildenv.env.spec import Column, Dataset, Environment, Privacy

__all__ = ["DataSource", "InferredDataset", "declare", "infer_dataset", "label_candidate",
           "parse_sources"]

UNIQUE_MIN_VALUES = 10  # fewer non-null values than this never make a key
LABEL_NAMES = ("label", "target", "y", "class", "outcome")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SNIFF = 64 << 10


@dataclass(frozen=True)
class DataSource:
    """One `--data [NAME=]PATH`: the dataset's name and its uri as the environment writes it."""

    name: str
    uri: str
    given: str  # as typed, for messages


@dataclass
class InferredDataset:
    name: str
    uri: str
    format: str
    restricted: bool
    rows: int = 0
    files: int = 1
    partitions: list[str] = field(default_factory=list)
    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    paths_off: bool = False  # restricted, under key=value directories: `partitions: []`


def parse_sources(project: Project, given: list[str], cwd: Path) -> list[DataSource]:
    """`[NAME=]PATH` arguments as datasets: paths relative to `cwd` become uris relative to the
    root (a directory gets its trailing `/`); BE015 for a path outside the repository, BE046
    for a name that cannot be derived or is given twice."""
    out: list[DataSource] = []
    problems: list[Diagnostic] = []
    for item in given:
        name, eq, target = item.partition("=")
        if not eq or "/" in name or not name:
            name, target = "", item
        scheme = urlparse(target).scheme.lower()
        if scheme and len(scheme) > 1:  # file://, s3://, gs://: written as given
            uri = target
            stem = uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
            parent = uri.rstrip("/").rsplit("/", 2)[-2] if uri.count("/") > 3 else ""
        else:
            path = (cwd / target).resolve()
            root = project.root.resolve()
            if not path.is_relative_to(root):
                problems.append(Diagnostic(
                    "BE015", f"--data {item}: {path} is outside the repository ({root})",
                    hints=("copy or move the data into the repository (builds must be "
                           "reproducible from it), or give an absolute file:// or s3:// uri",)))
                continue
            if not path.exists():
                problems.append(Diagnostic("BE053", f"--data {item}: {path} not found"))
                continue
            uri = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
            stem = path.name if path.is_dir() else path.name.split(".")[0]
            parent = path.parent.name
        name = name or (stem if _NAME.match(stem) else parent if _NAME.match(parent) else "")
        if not _NAME.match(name):
            problems.append(Diagnostic(
                "BE046", f"--data {item}: cannot name a dataset after '{stem}'",
                hints=(f"name it: --data NAME={target}",)))
            continue
        if any(s.name == name for s in out):
            problems.append(Diagnostic(
                "BE046", f"--data {item}: dataset '{name}' is given twice",
                hints=(f"name one of them: --data OTHER={target}",)))
            continue
        out.append(DataSource(name, uri, item))
    if problems:
        raise DiagnosticError(problems, 2)
    return out


def infer_dataset(project: Project, env_name: str, source: DataSource, restricted: bool
                  ) -> tuple[InferredDataset, list[Diagnostic]]:
    """Profile one dataset; DiagnosticError (exit 1) when it cannot be read as a table."""
    if source.uri.endswith("/"):
        found = InferredDataset(source.name, source.uri, "parquet", restricted)
        partitions, typed = _hive_partitions(project, source, found)
        if not restricted:
            found.partitions = partitions
        else:  # its paths give no column: partition values would be paths (BE060)
            found.paths_off = bool(partitions)
    else:
        fmt = _format(project, source)
        found = InferredDataset(source.name, source.uri, fmt, restricted)
        typed = {}
    notes: list[Diagnostic] = []
    placeholder = {"_": Column(dtype="string"), **{p: _typed(typed[p]) for p in found.partitions}}
    with _open(project, env_name, found, placeholder) as read:
        names = list(_guarded(lambda: read.schema).names)
    if not names:
        raise DiagnosticError([_at(source, "BE042", f"'{source.uri}' is empty: no header, no "
                                   "rows, nothing to infer")], 1)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DiagnosticError([_at(source, "BE043", f"'{source.uri}' names column "
                                   f"'{repeated[0]}' twice in its header")], 1)
    slots = Slots()  # duplicate counters of this dataset, at most a few at once
    if found.format == "csv":
        declared = {n: Column(dtype="string") for n in names}
        profilers: dict[str, Any] = {n: TextProfiler(n, slots) for n in names}
    else:
        declared = {n: _typed(typed.get(n) or "string") for n in names}
        profilers = {n: TypedProfiler(n, slots) for n in names}
    with _open(project, env_name, found, declared) as read:
        total = read.total_rows if found.format == "parquet" else None
        total = total() if callable(total) else total

        def stream() -> None:
            for batch in progress.batches(read.batches(names), f"infer {source.name}", total):
                for i, column in enumerate(batch.schema.names):
                    profilers[column].add(batch.column(i))
                found.rows += batch.num_rows

        _guarded(stream)
    found.columns = {n: profilers[n].finish() for n in names}
    if found.rows == 0:
        notes.append(_at(source, "BE042", f"'{source.uri}' has no rows: only the column names "
                         "(and, for Parquet, their types) are inferred", Severity.WARNING))
    for profile in found.columns.values():
        notes.extend(_column_notes(source, found, profile))
    return found, notes


def declare(found: InferredDataset, profile: ColumnProfile) -> dict[str, Any]:
    """A column's declaration from what its data showed:

    - `dtype`; `nullable: false` when no null was seen, else `max_null_fraction`: the null
      share rounded up to the next hundredth (left out when every value is null);
    - `range`: the smallest and largest value rounded outward to three significant digits of
      the larger bound (integers to whole numbers); dates exact, timestamps to whole days;
    - `domain`: a string column's values when there are at most DOMAIN_MAX of them and each
      appears twice on average; `unique: true` when each of at least UNIQUE_MIN_VALUES integer
      or string values appears once.

    A restricted dataset gets no range and no domain: they would be its values."""
    assert profile.dtype is not None
    out: dict[str, Any] = {"dtype": profile.dtype}
    if profile.rows and not profile.nulls:
        out["nullable"] = False
    elif profile.rows and profile.nulls < profile.rows:
        out["max_null_fraction"] = math.ceil(profile.nulls / profile.rows * 100) / 100
    unique = profile.unique and profile.non_null >= UNIQUE_MIN_VALUES
    if found.restricted:
        return {**out, "unique": True} if unique else out
    if profile.dtype in ("date", "timestamp") and profile.lo is not None:
        out["range"] = _temporal_range(profile)
    elif profile.lo is not None and profile.dtype not in ("bool", "string"):
        integer = profile.dtype.startswith("int")
        out["range"] = [_outward(profile.lo, profile.hi, integer, ROUND_FLOOR),
                        _outward(profile.hi, profile.lo, integer, ROUND_CEILING)]
    if (profile.dtype == "string" and profile.values and not unique
            and len(profile.values) * 2 <= profile.non_null):
        out["domain"] = list(profile.values)
    if unique:
        out["unique"] = True
    Column.model_validate(out)  # what is written must load
    return out


def label_candidate(datasets: list[InferredDataset]) -> tuple[str, str] | None:
    """(dataset, column) of a likely label: a column named label, target, y, class or outcome,
    else the last bool column of the first dataset that has one."""
    for found in datasets:
        for name in found.columns:
            if name.lower() in LABEL_NAMES and found.columns[name].dtype is not None:
                return found.name, name
    for found in datasets:
        flags = [n for n, p in found.columns.items() if p.dtype == "bool"]
        if flags:
            return found.name, flags[-1]
    return None


# --- reading ----------------------------------------------------------------------------------

def _open(project: Project, env_name: str, found: InferredDataset,
          columns: dict[str, Column]) -> Any:
    """An unpinned read of the dataset through the gate, as part of a provisional environment
    (restricted when the user said so: its read is audited, its errors quote no value)."""
    dataset = Dataset.model_validate({"uri": found.uri, "format": found.format,
                                      "columns": columns,
                                      "partitions": [] if found.paths_off else
                                      found.partitions or None})
    env = Environment(name=env_name, datasets={found.name: dataset},
                      privacy=Privacy(restricted=[found.name] if found.restricted else []))
    try:
        return Gate(project, env, "init").open(found.name, expect=None)
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 1) from None


def _typed(dtype: str) -> Column:
    """A declared column of `dtype` (a provisional environment's)."""
    return Column.model_validate({"dtype": dtype})


def _guarded(work: Any) -> Any:
    """Run a read; the gate's errors (undecodable data, a file changed while read) exit 1."""
    try:
        return work()
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 1) from None


def _format(project: Project, source: DataSource) -> str:
    """parquet or csv: by the file's first bytes (a `.csv` that is binary is refused too)."""
    try:
        with locate(source.uri, project).open() as stream:
            head = stream.read(_SNIFF)
    except FileNotFoundError:
        raise DiagnosticError([_at(source, "BE053", f"'{source.uri}' not found")], 1) from None
    except OSError as exc:
        raise DiagnosticError([_at(source, "BE053", f"cannot read '{source.uri}': "
                                   f"{exc.strerror or exc}")], 1) from None
    suffix = source.uri.lower()
    if not head:
        raise DiagnosticError([_at(source, "BE042", f"'{source.uri}' is empty (0 bytes): "
                                   "nothing to infer")], 1)
    if head.startswith(b"PAR1"):
        return "parquet"
    if suffix.endswith(PARQUET_SUFFIXES):
        raise DiagnosticError([_at(source, "BE043", f"'{source.uri}' is not a Parquet file "
                                   "(it does not start with PAR1)")], 1)
    if b"\0" in head or not _utf8(head):
        raise DiagnosticError([_at(source, "BE043", f"'{source.uri}' is neither CSV text nor "
                                   "a Parquet file", hints=(
                                       "buildenv reads CSV (UTF-8, comma-separated, a header "
                                       "row) and Parquet",))], 1)
    return "csv"


def _utf8(head: bytes) -> bool:
    """Whether `head` (maybe cut inside a character) is UTF-8 text."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return True
    except UnicodeDecodeError:
        return False


def _hive_partitions(project: Project, source: DataSource, found: InferredDataset
                     ) -> tuple[list[str], dict[str, str]]:
    """The `key=value` directories every file lives under, and each key's dtype (inferred
    from the values in the paths)."""
    try:
        listed = list_files(locate(source.uri, project), [])
    except FileNotFoundError:
        raise DiagnosticError([_at(source, "BE053", f"'{source.uri}' not found")], 1) from None
    except ManifestError as exc:
        raise DiagnosticError([_at(source, code, text) for code, text in exc.problems], 1) \
            from None
    found.files = len(listed)
    # keys and values URI-decoded, as the gate reads them (and pyarrow: `my%20col=` is `my col`)
    layouts = [[unquote(part.partition("=")[0]) if "=" in part else None
                for part in item.path.split("/")[:-1]] for item in listed]
    # the layout most files share is the dataset's: the few that differ are what to name
    shared = Counter(tuple(layout) for layout in layouts).most_common(1)[0][0]
    keys = [k for k in shared if k is not None]
    odd = [item for item, layout in zip(listed, layouts) if tuple(layout) != shared
           or None in layout]
    if None in shared:  # most files are under a directory that is not key=value
        item = odd[0]
        plain = next(p for p in item.path.split("/")[:-1] if "=" not in p)
        raise DiagnosticError([_at(source, "BE062", f"'{source.uri}{item.path}' is under "
                                   f"'{plain}/', which is not a key=value directory", hints=(
                                       "every file of a partitioned dataset lives at the same "
                                       "depth, under the same key=value directories",))], 1)
    if odd:
        like = next(item for item, layout in zip(listed, layouts) if tuple(layout) == shared)
        layout_text = "/".join(f"{k}=..." for k in keys) or "the top directory"
        more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
        raise DiagnosticError([_at(source, "BE062", f"'{source.uri}{odd[0].path}'{more} is not "
                                   f"under {layout_text} like {len(listed) - len(odd)} of "
                                   f"{len(listed)} files (e.g. '{like.path}')", hints=(
                                       "every file of a partitioned dataset lives at the same "
                                       "depth, under the same key=value directories",))], 1)
    values: dict[str, list[str | None]] = {k: [] for k in keys}
    for item in listed:
        dirs = item.path.split("/")[:-1]
        for part, key in zip(dirs, keys):
            text = unquote(part.partition("=")[2])
            values[key].append(None if text == HIVE_NULL else text)
    typed = {}
    for key, seen in values.items():
        profiler = TextProfiler(key)
        profiler.add(pa.array(sorted({v for v in seen if v is not None}), pa.string()))
        typed[key] = profiler.finish().dtype or "string"
    return keys, typed


# --- notes ------------------------------------------------------------------------------------

_KIND_WORDS = {"int": "integer", "float": "decimal", "bool": "true/false", "date": "date",
               "timestamp": "date-time", "text": "other text"}


def _column_notes(source: DataSource, found: InferredDataset, profile: ColumnProfile
                  ) -> list[Diagnostic]:
    out = []
    if profile.left_out is not None:
        out.append(_at(source, "BE045", f"column '{profile.name}' is left out: "
                       f"{profile.left_out}", Severity.WARNING,
                       hints=("convert it to a supported type, or declare it by hand if "
                              "another file stores it readably",)))
    if profile.kinds:
        parts = [f"{n:,} {_KIND_WORDS[k]} (first at data row {profile.first_rows[k]:,})"
                 for k, n in profile.kinds.items()]
        out.append(_at(source, "BE044", f"column '{profile.name}' mixes kinds of values: "
                       + ", ".join(parts) + f"; declared {profile.dtype}, the narrowest dtype "
                       "that holds them all", Severity.WARNING,
                       hints=("if the odd values are mistakes (a null written `N/A`), fix "
                              "the data and run init again",)))
    return out


def _at(source: DataSource, code: str, message: str,
        severity: Severity = Severity.ERROR, hints: tuple[str, ...] = ()) -> Diagnostic:
    """A diagnostic about a data file, located at the file."""
    return Diagnostic(code, f"dataset '{source.name}': {message}", source.uri.rstrip("/"),
                      severity=severity, hints=hints)


# --- rounding ---------------------------------------------------------------------------------

def _outward(value: Any, other: Any, integer: bool, rounding: str) -> int | float:
    """`value` rounded away from the data (down for a minimum, up for a maximum) to three
    significant digits of the larger of the two bounds; integers never to less than 1."""
    peak = max(abs(value), abs(other))
    if peak == 0:
        return 0
    exponent = math.floor(math.log10(peak)) - 2
    if integer:
        exponent = max(exponent, 0)
    step = Decimal(1).scaleb(exponent)
    rounded = (Decimal(repr(value)) / step).to_integral_value(rounding) * step
    if integer or exponent >= 0:
        return int(rounded)
    return float(rounded)


def _temporal_range(profile: ColumnProfile) -> list[str]:
    if profile.dtype == "date":
        return [profile.lo.isoformat(), profile.hi.isoformat()]
    lo = profile.lo.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hi = profile.hi.astimezone(dt.UTC)
    top = hi.replace(hour=0, minute=0, second=0, microsecond=0)
    if top != hi:
        top += dt.timedelta(days=1)
    return [_iso(lo), _iso(top)]


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

