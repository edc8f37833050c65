"""Data validation: each dataset against its declared columns, streamed and vectorised.

Record batches are read with bounded memory and checked with pyarrow compute.
String columns with a domain, pattern or length are read dictionary-encoded, so
those tests run once per dictionary entry (RE2 for patterns) and rows are
counted by a `take` over the indices; ranges (either end may be open) use a
per-batch min/max and count offending rows only when a bound is crossed; unique
columns stream into `uniqueness.DuplicateCounter` (exact, bounded memory).
Each constraint is judged against `max_violation_fraction` of the non-null
values: above it an error, up to it a warning. Restricted datasets yield counts
and fractions only, never a value. Results are cached by (dataset digest,
column-spec digest).
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.formats import ARROW_TYPES, arrow_type, type_accepts
from buildenv.data.gate import Gate, GateError
from buildenv.data.uniqueness import DuplicateCounter, Duplicates
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset, _parse_temporal

__all__ = ["ColumnChecks", "ColumnReport", "check_batch", "validate_dataset", "validate_env"]

EXAMPLES = 3


@dataclass
class ColumnReport:
    """Aggregates for one column; enough to judge every rule and to print counts."""

    rows: int = 0
    nulls: int = 0
    out_of_domain: int = 0
    out_of_domain_values: dict[Any, int] = field(default_factory=dict)
    below: int = 0
    above: int = 0
    examples: list[str] = field(default_factory=list)
    mismatched: int = 0  # rows not matching `pattern`
    pattern_examples: list[str] = field(default_factory=list)
    too_short: int = 0
    too_long: int = 0
    length_examples: list[str] = field(default_factory=list)
    duplicates: Duplicates | None = None  # unique columns, after the last batch

    @property
    def non_null(self) -> int:
        return self.rows - self.nulls


@dataclass
class ColumnChecks:
    """What to test in each batch of one column, prepared once from its declaration."""

    col: Column
    domain: pa.Array | None = None
    bounds: tuple[pa.Scalar | None, pa.Scalar | None] | None = None
    duplicates: DuplicateCounter | None = None
    examples: bool = True  # False for restricted datasets: no value is ever kept
    _dictionary: Any = None  # the last dictionary seen, kept alive so its buffers stay its own
    _flags: dict[str, pa.Array] = field(default_factory=dict)

    def flags(self, arr: pa.Array, name: str, compute) -> pa.Array:
        """`compute` over the batch's values: for a dictionary-encoded batch, its dictionary,
        computed once per distinct dictionary (a row group's batches share equal ones)."""
        if not pa.types.is_dictionary(arr.type):
            return compute(arr)
        values = arr.dictionary
        if values is not self._dictionary and not _same_array(values, self._dictionary):
            self._dictionary, self._flags = values, {}
        if name not in self._flags:
            self._flags[name] = compute(values)
        return self._flags[name]


def _same_array(a: pa.Array, b: pa.Array | None) -> bool:
    """Same buffers, or equal contents: a row group's batches get equal dictionaries, and
    comparing them costs far less than a regex over them."""
    if b is None or len(a) != len(b) or a.type != b.type:
        return False
    if a.offset == b.offset and all(
            (x.address if x is not None else None) == (y.address if y is not None else None)
            for x, y in zip(a.buffers(), b.buffers())):
        return True
    return a.equals(b)


def check_batch(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    """Every declared rule of one column on one batch, accumulated into `report`."""
    report.rows += len(arr)
    report.nulls += arr.null_count
    col = checks.col
    if checks.domain is not None:
        _domain_counts(arr, checks, report)
    if checks.bounds is not None:
        _range_counts(arr, checks.bounds[0], checks.bounds[1], report, checks.examples)
    if col.pattern is not None:
        _pattern_counts(arr, checks, report)
    if col.length is not None:
        _length_counts(arr, checks, report)
    if checks.duplicates is not None:
        checks.duplicates.add(arr)


def _rows_flagged(arr: pa.Array, flags: pa.Array) -> pa.Array:
    """Per-row flags from flags over the batch's values (its dictionary, when encoded); nulls
    stay null and are never counted."""
    return pc.take(flags, arr.indices) if pa.types.is_dictionary(arr.type) else flags


def _count(row_flags: pa.Array) -> int:
    return pc.sum(row_flags).as_py() or 0


def _flagged_values(arr: pa.Array, row_flags: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return pc.take(arr.dictionary, pc.filter(arr.indices, row_flags))
    return pc.filter(arr, row_flags)


def _add_examples(into: list[str], values: pa.Array) -> None:
    """Up to EXAMPLES distinct values, in the order first seen."""
    if len(into) >= EXAMPLES:
        return
    for value in pc.unique(values)[: EXAMPLES].to_pylist():
        shown = _show(value)
        if shown not in into and len(into) < EXAMPLES:
            into.append(shown)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _domain_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    domain = checks.domain
    flags = checks.flags(arr, "domain",
                         lambda values: pc.invert(pc.is_in(values, value_set=domain)))
    if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
        return
    rows = _rows_flagged(arr, flags)
    if arr.null_count and not pa.types.is_dictionary(arr.type):
        rows = pc.and_kleene(rows, pc.is_valid(arr))  # is_in(null) is false: not a violation
    count = _count(rows)
    if not count:
        return
    report.out_of_domain += count
    vc = pc.value_counts(_flagged_values(arr, rows))
    for item in vc.to_pylist():
        key = item["values"]
        report.out_of_domain_values[key] = report.out_of_domain_values.get(key, 0) + item["counts"]


def _range_counts(arr: pa.Array, lo: pa.Scalar | None, hi: pa.Scalar | None,
                  report: ColumnReport, examples: bool = True) -> None:
    mm = pc.min_max(arr)
    mn, mx = mm["min"], mm["max"]
    if not mn.is_valid:
        return
    if lo is not None and pc.less(mn, lo).as_py():
        below = pc.less(arr, lo)
        report.below += pc.sum(below).as_py() or 0
        if examples and len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, below)[:EXAMPLES].to_pylist())
    if hi is not None and pc.greater(mx, hi).as_py():
        above = pc.greater(arr, hi)
        report.above += pc.sum(above).as_py() or 0
        if examples and len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, above)[:EXAMPLES].to_pylist())


def _pattern_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    pattern = checks.col.pattern
    flags = checks.flags(arr, "pattern",
                         lambda values: pc.invert(pc.match_substring_regex(values, pattern)))
    if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
        return
    rows = _rows_flagged(arr, flags)
    count = _count(rows)
    if count:
        report.mismatched += count
        if checks.examples:
            _add_examples(report.pattern_examples, _flagged_values(arr, rows))


def _length_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    lo, hi = checks.col.length  # type: ignore[misc]
    lengths = checks.flags(arr, "lengths", pc.utf8_length)
    for bound, compare, attr in ((lo, pc.less, "too_short"), (hi, pc.greater, "too_long")):
        if bound is None:
            continue
        limit = _packed("q", [bound], pa.int64())[0]  # not pa.scalar: see _packed
        flags = checks.flags(arr, attr, lambda _v, c=compare, b=limit: c(lengths, b))
        if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
            continue
        rows = _rows_flagged(arr, flags)
        count = _count(rows)
        if count:
            setattr(report, attr, getattr(report, attr) + count)
            if checks.examples:
                _add_examples(report.length_examples, _flagged_values(arr, rows))


# pa.array()/pa.scalar() on Python values make pyarrow import pandas (its lazy "is this a
# pandas object?" probe): ~0.4 s of CPU that validation never needs. Domains and bounds are
# built from raw buffers instead; anything unusual falls back to pa.array/pa.scalar.
_EPOCH_DAY = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PACK = {"int8": "b", "int16": "h", "int32": "i", "int64": "q", "float32": "f", "float64": "d"}


def _packed(fmt: str, values: list, type_: pa.DataType) -> pa.Array:
    data = struct.pack(f"<{len(values)}{fmt}", *values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(data)])


def _domain_array(values: list, dtype: str) -> pa.Array:
    """pa.array(values, type=arrow_type(dtype)), without importing pandas."""
    try:
        if dtype == "string" and all(type(v) is str for v in values):
            data = [v.encode("utf-8") for v in values]
            offsets = [0]
            for item in data:
                offsets.append(offsets[-1] + len(item))
            return pa.Array.from_buffers(pa.string(), len(values), [
                None, pa.py_buffer(struct.pack(f"<{len(offsets)}i", *offsets)),
                pa.py_buffer(b"".join(data))])
        if dtype in _PACK and dtype.startswith("int") and all(type(v) is int for v in values):
            return _packed(_PACK[dtype], values, arrow_type(dtype))
        if dtype in ("float32", "float64") and all(type(v) in (int, float) for v in values):
            # float64 values; is_in casts them to the stored type (float32 data: float32)
            return _packed("d", [float(v) for v in values], pa.float64())
    except (struct.error, UnicodeError, OverflowError):
        pass  # out of range for the width, or not encodable: let pyarrow say so
    return pa.array(values, type=arrow_type(dtype))


def _bounds(col: Column, actual: pa.DataType
            ) -> tuple[pa.Scalar | None, pa.Scalar | None] | None:
    """The range as scalars comparable with the stored type; None for an open end."""
    if col.range is None:
        return None
    lo, hi = col.range
    given = [v for v in (lo, hi) if v is not None]
    if col.dtype == "date":
        days = [(_parse_temporal(v).date() - _EPOCH_DAY).days for v in given]
        scalars = list(_packed("i", days, pa.date32()))
    elif col.dtype == "timestamp":
        unit = actual.unit if pa.types.is_timestamp(actual) else "us"
        tz = actual.tz if pa.types.is_timestamp(actual) else "UTC"
        if unit in ("us", "ns"):  # exact: datetime has microsecond precision
            scale = 1000 if unit == "ns" else 1
            ticks = [(_parse_temporal(v) - _EPOCH) // dt.timedelta(microseconds=1) * scale
                     for v in given]
            scalars = [s.cast(actual) for s in _packed("q", ticks, pa.timestamp(unit, tz or "UTC"))]
        else:
            scalars = [pa.scalar(_parse_temporal(v), pa.timestamp(unit, tz or "UTC")).cast(actual)
                       for v in given]
    else:
        scalars = list(_packed("d", [float(v) for v in given], pa.float64()))
    found = iter(scalars)
    return (next(found) if lo is not None else None, next(found) if hi is not None else None)


def validate_dataset(res: Resolved, ds_name: str, project: Project,
                     digest: str | None = None, purpose: str = "validate"
                     ) -> tuple[list[Diagnostic], str | None]:
    """Every violation of `ds_name`'s column declarations, one diagnostic per (column, rule),
    and the digest of the bytes validated (None when they could not be read).

    The bytes are read through the gate: verified against `digest` when given (a lock pin),
    otherwise hashed while read so the result can be cached by what was actually checked."""
    env = res.env
    dataset = env.datasets[ds_name]
    restricted = env.restricted(ds_name)
    columns = list(dataset.columns)
    dict_cols = [n for n, c in dataset.columns.items()
                 if c.dtype == "string" and (c.domain or c.pattern is not None or c.length)]
    gate = Gate(project, env, purpose, where=res)
    try:
        read = gate.open(ds_name, expect=digest)
    except GateError as exc:
        return [exc.diagnostic], None
    with read:
        return _validate_read(res, ds_name, dataset, read, columns, dict_cols, restricted)


def _spill_dir(read: Any) -> str:
    """Where duplicate counting may spill values: inside the repository's own state (owner
    only), never a shared temp directory; each count removes its files when it ends."""
    folder = read.gate.project.state_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder)


def _validate_read(res: Resolved, ds_name: str, dataset: Dataset, read: Any, columns: list[str],
                   dict_cols: list[str], restricted: bool) -> tuple[list[Diagnostic], str | None]:
    try:
        schema = read.schema
    except GateError as exc:
        return [exc.diagnostic], None
    problems: list[Diagnostic] = []
    checked: dict[str, ColumnChecks] = {}
    for name, col in dataset.columns.items():
        where = ("datasets", ds_name, "columns", name)
        if name not in schema.names:
            hint = _close(name, schema.names)
            problems.append(res.diag("BE206", f"dataset '{ds_name}' has no column '{name}' "
                                     f"({dataset.uri})", *where, hints=(hint,) if hint else ()))
            continue
        actual = schema.field(name).type
        if not type_accepts(col.dtype, actual):
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared {col.dtype}, stored "
                                     f"as {actual}", *where, "dtype",
                                     hints=(f"declare `dtype: {_suggest(actual)}` or cast the "
                                            "column when writing the data",)))
            continue
        checked[name] = ColumnChecks(
            col, domain=_domain_array(list(col.domain), col.dtype) if col.domain else None,
            bounds=_bounds(col, actual), examples=not restricted,
            duplicates=DuplicateCounter(examples=0 if restricted else EXAMPLES,
                                        spill_dir=_spill_dir(read))
            if col.unique else None)
    reports = {name: ColumnReport() for name in checked}
    try:
        for batch in progress.batches(read.batches(list(checked), dictionary=dict_cols),
                                      f"validate {dataset.uri}", read.total_rows):
            for name, checks in checked.items():
                arr = batch.column(batch.schema.get_field_index(name))
                check_batch(arr, checks, reports[name])
    except GateError as exc:  # nothing decoded so far is reported: the bytes are not trusted
        problems.append(exc.diagnostic)
        return problems, None
    for name, report in reports.items():
        if checked[name].duplicates is not None:
            report.duplicates = checked[name].duplicates.finish()  # type: ignore[union-attr]
        problems.extend(_judge(res, ds_name, name, checked[name].col, report, restricted))
    return problems, read.digest


def _judge(res: Resolved, ds_name: str, name: str, col: Column, report: ColumnReport,
           restricted: bool) -> list[Diagnostic]:
    out = []
    where = ("datasets", ds_name, "columns", name)
    label = f"{ds_name}.{name}"
    # What a restricted dataset's violations point at instead of values: the audited peek;
    # `--invalid` selects rows that break nullability, the domain or the range.
    look = (f"values are never printed; a person allowed by privacy.peek can look, audited: "
            f"`buildenv peek ENV --dataset {ds_name} --rows 10 --reason \"...\"`")
    hidden = look.replace(" --rows 10 ", f" --rows 10 --invalid {name} ")
    if report.nulls and not col.nullable:
        out.append(res.diag("BE202", f"{label}: {report.nulls} of {report.rows} rows are null "
                            "but the column is declared nullable: false", *where, "nullable"))
    if col.max_null_fraction is not None and report.rows:
        fraction = report.nulls / report.rows
        if fraction > col.max_null_fraction:
            out.append(res.diag("BE203", f"{label}: null fraction {fraction:.4f} ({report.nulls}"
                                f" of {report.rows} rows) exceeds max_null_fraction "
                                f"{col.max_null_fraction}", *where, "max_null_fraction"))

    def violation(code: str, key: str, count: int, what: str, detail: str = "",
                  hints: tuple[str, ...] = ()) -> None:
        share, severity, tolerance = _tolerance(col, count, report.non_null)
        out.append(res.diag(code, f"{label}: {count} of {report.non_null} non-null values "
                            f"({share}) {what}{detail}{tolerance}", *where, key, hints=hints,
                            severity=severity))

    if report.out_of_domain:
        if not restricted:
            top = sorted(report.out_of_domain_values.items(), key=lambda kv: (-kv[1], kv[0]))
            detail = " (" + ", ".join(f"{_show(v)}: {n}" for v, n in top[:EXAMPLES]) + (
                ", ..." if len(top) > EXAMPLES else "") + ")"
            hint = f"add {', '.join(_show(v) for v, _ in top[:EXAMPLES])} to the domain if valid"
        else:
            detail = (f" ({len(report.out_of_domain_values)} distinct values; restricted "
                      "dataset: values not shown)")
            hint = hidden
        violation("BE204", "domain", report.out_of_domain, "are outside the domain", detail,
                  (hint,))
    if report.below or report.above:
        lo, hi = (_bound(v) for v in col.range)  # type: ignore[union-attr]
        detail = f" ({report.below} below, {report.above} above)"
        if not restricted and report.examples:
            detail += f"; e.g. {', '.join(report.examples[:EXAMPLES])}"
        violation("BE205", "range", report.below + report.above, f"are outside range [{lo}, {hi}]",
                  detail)
    if report.mismatched:
        detail = (f"; e.g. {', '.join(report.pattern_examples)}" if not restricted
                  and report.pattern_examples else "")
        violation("BE207", "pattern", report.mismatched,
                  f"do not match pattern {col.pattern!r}", detail,
                  (look,) if restricted else ())
    if report.too_short or report.too_long:
        lo, hi = (_bound(v) for v in col.length)  # type: ignore[union-attr]
        detail = f" ({report.too_short} shorter, {report.too_long} longer)"
        if not restricted and report.length_examples:
            detail += f"; e.g. {', '.join(report.length_examples)}"
        violation("BE208", "length", report.too_short + report.too_long,
                  f"have a length outside [{lo}, {hi}]", detail)
    dups = report.duplicates
    if dups is not None and dups.error is not None:
        out.append(res.diag("BE210", f"{label}: unique could not be checked: spilling values "
                            f"to disk failed ({dups.error})", *where, "unique",
                            hints=("free space in the temporary directory (TMPDIR), or point "
                                   "TMPDIR at a larger disk",)))
    elif dups is not None and dups.rows:
        detail = f" ({dups.values} distinct values occur more than once)"
        if not restricted and dups.examples:
            detail += "; e.g. " + ", ".join(f"{_show(v)} ({n} rows)" for v, n in dups.examples)
        violation("BE209", "unique", dups.rows, "are duplicated", detail,
                  (look,) if restricted else ())
    return out


def _bound(value: Any) -> str:
    return "null" if value is None else str(value)


def _tolerance(col: Column, count: int, non_null: int) -> tuple[str, Severity, str]:
    """The violating share, and whether it is an error or, within the tolerance, a warning."""
    fraction = count / non_null if non_null else 1.0
    share = f"fraction {fraction:.4g}"
    limit = col.max_violation_fraction
    if limit is None:
        return share, Severity.ERROR, ""
    if fraction <= limit + 1e-12:
        return share, Severity.WARNING, f"; within max_violation_fraction {limit}"
    return share, Severity.ERROR, f"; exceeds max_violation_fraction {limit}"


def _close(name: str, names: list[str]) -> str | None:
    from buildenv.core.diagnostics import did_you_mean

    return did_you_mean(name, names)


def _suggest(actual: pa.DataType) -> str:
    for dtype in ARROW_TYPES:
        if type_accepts(dtype, actual):
            return dtype
    return str(actual)


# --- whole environments, cached ---------------------------------------------------------------

def _spec_digest(dataset: Dataset, restricted: bool) -> str:
    data = dataset.model_dump(mode="json")
    data.pop("description", None)
    data.pop("uri", None)
    for col in data["columns"].values():
        col.pop("description", None)
        col.pop("serving", None)
        col.pop("monitor", None)  # drift only
    # every other column key (range, domain, pattern, length, unique, max_violation_fraction,
    # ...) is in the digest; v2: messages carry fractions, severities are cached
    return digest_json({"columns": data["columns"], "format": data["format"],
                        "restricted": restricted, "v": 2})


def validate_env(res: Resolved, project: Project, digests: dict[str, str] | None = None,
                 datasets: list[str] | None = None, purpose: str = "validate"
                 ) -> list[Diagnostic]:
    """Validate each dataset. With `digests` (the lock's pins) the reads are verified against
    them and a result already cached for (digest, column declarations) is reused; results are
    cached under the digest of the bytes actually validated."""
    problems: list[Diagnostic] = []
    for ds_name in datasets or sorted(res.env.datasets):
        dataset = res.env.datasets[ds_name]
        spec = _spec_digest(dataset, res.env.restricted(ds_name))
        pinned = (digests or {}).get(ds_name)
        if pinned is not None:
            cached = _cache_get(project, pinned, spec)
            if cached is not None:
                problems.extend(_relocate(res, ds_name, cached))
                continue
        found, digest = validate_dataset(res, ds_name, project, pinned, purpose)
        problems.extend(found)
        # a failed spill is not a property of the data: not cached
        if digest is not None and not any(p.code == "BE210" for p in found):
            _cache_put(project, digest, spec, [_portable(p, res, ds_name) for p in found])
    return problems


def _cache_file(project: Project, digest: str, spec: str) -> Path:
    hexkey = digest_json({"data": digest, "spec": spec}).split(":", 1)[1]
    return project.state_dir / "cache" / "validate" / hexkey[:2] / f"{hexkey}.json"


def _cache_get(project: Project, digest: str, spec: str) -> list[dict] | None:
    try:
        return json.loads(_cache_file(project, digest, spec).read_text())
    except (OSError, ValueError):
        return None


def _cache_put(project: Project, digest: str, spec: str, entries: list[dict]) -> None:
    try:
        atomic_write_text(_cache_file(project, digest, spec), json.dumps(entries))
    except OSError:
        pass  # a cache that cannot be written is only slower


def _portable(d: Diagnostic, res: Resolved, ds_name: str) -> dict:
    """Cache entries hold the column path, not file positions: other envs share the entry."""
    data = d.to_json()
    data["where"] = _where_of(d, ds_name)
    for key in ("path", "line", "col"):
        data.pop(key)
    return data


def _where_of(d: Diagnostic, ds_name: str) -> list[str]:
    # messages start with "<dataset>.<column>:" (or name the dataset for BE206)
    head = d.message.split(":", 1)[0]
    if head.startswith(f"{ds_name}."):
        return ["datasets", ds_name, "columns", head[len(ds_name) + 1:]]
    if d.code == "BE206":
        column = d.message.split("column '", 1)[1].split("'", 1)[0]
        return ["datasets", ds_name, "columns", column]
    return ["datasets", ds_name, "uri"]


_RULE_KEY = {"BE201": "dtype", "BE202": "nullable", "BE203": "max_null_fraction",
             "BE204": "domain", "BE205": "range", "BE207": "pattern", "BE208": "length",
             "BE209": "unique", "BE210": "unique"}


def _relocate(res: Resolved, ds_name: str, cached: list[dict]) -> list[Diagnostic]:
    out = []
    for item in cached:
        path = list(item["where"])
        if item["code"] in _RULE_KEY:
            path.append(_RULE_KEY[item["code"]])
        out.append(res.diag(item["code"], item["message"], *path, hints=tuple(item["hints"]),
                            severity=Severity(item.get("severity", "error"))))
    return out
