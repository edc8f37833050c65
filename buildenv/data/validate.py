"""Data validation: each dataset against its declared columns, streamed and vectorised.

Record batches are read with bounded memory and checked with pyarrow compute.
String columns with a domain are read dictionary-encoded, so the domain test
runs on the (small) dictionary rather than on every row; ranges use a per-batch
min/max and count offending rows only when a bound is crossed. Restricted
datasets yield counts and aggregates only, never a value. Results are cached by
(dataset digest, column-spec digest).
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
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.formats import ARROW_TYPES, arrow_type, type_accepts
from buildenv.data.gate import Gate, GateError
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset, _parse_temporal

__all__ = ["ColumnReport", "validate_dataset", "validate_env"]

EXAMPLES = 3


@dataclass
class ColumnReport:
    """Aggregates for one column; enough to judge every rule and to print counts."""

    rows: int = 0
    nulls: int = 0
    out_of_domain: int = 0
    out_of_domain_values: dict[str, int] = field(default_factory=dict)
    below: int = 0
    above: int = 0
    examples: list[str] = field(default_factory=list)


def _domain_counts(arr: pa.Array, domain: pa.Array, report: ColumnReport) -> None:
    if pa.types.is_dictionary(arr.type):
        dictionary = arr.dictionary
        bad_mask = pc.invert(pc.is_in(dictionary, value_set=domain))
        if not pc.any(bad_mask).as_py():
            return
        bad_idx = pc.indices_nonzero(bad_mask)
        hits = pc.is_in(arr.indices, value_set=bad_idx.cast(arr.indices.type))
        count = pc.sum(hits).as_py() or 0
        if not count:
            return
        values = pc.take(dictionary, pc.filter(arr.indices, hits))
    else:
        hits = pc.invert(pc.is_in(arr, value_set=domain))
        hits = pc.and_kleene(hits, pc.is_valid(arr))
        count = pc.sum(hits).as_py() or 0
        if not count:
            return
        values = pc.filter(arr, hits)
    report.out_of_domain += count
    vc = pc.value_counts(values)
    for item in vc.to_pylist():
        key = str(item["values"])
        report.out_of_domain_values[key] = report.out_of_domain_values.get(key, 0) + item["counts"]


def _range_counts(arr: pa.Array, lo: pa.Scalar, hi: pa.Scalar, report: ColumnReport) -> None:
    mm = pc.min_max(arr)
    mn, mx = mm["min"], mm["max"]
    if not mn.is_valid:
        return
    if pc.less(mn, lo).as_py():
        below = pc.less(arr, lo)
        report.below += pc.sum(below).as_py() or 0
        if len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, below)[:EXAMPLES].to_pylist())
    if pc.greater(mx, hi).as_py():
        above = pc.greater(arr, hi)
        report.above += pc.sum(above).as_py() or 0
        if len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, above)[:EXAMPLES].to_pylist())


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
    except (struct.error, UnicodeError, OverflowError):
        pass  # out of range for the width, or not encodable: let pyarrow say so
    return pa.array(values, type=arrow_type(dtype))


def _bounds(col: Column, actual: pa.DataType) -> tuple[pa.Scalar, pa.Scalar] | None:
    if col.range is None:
        return None
    lo, hi = col.range
    if col.dtype == "date":
        days = [(_parse_temporal(v).date() - _EPOCH_DAY).days for v in (lo, hi)]
        array = _packed("i", days, pa.date32())
        return array[0], array[1]
    if col.dtype == "timestamp":
        unit = actual.unit if pa.types.is_timestamp(actual) else "us"
        tz = actual.tz if pa.types.is_timestamp(actual) else "UTC"
        if unit in ("us", "ns"):  # exact: datetime has microsecond precision
            scale = 1000 if unit == "ns" else 1
            ticks = [(_parse_temporal(v) - _EPOCH) // dt.timedelta(microseconds=1) * scale
                     for v in (lo, hi)]
            array = _packed("q", ticks, pa.timestamp(unit, tz or "UTC"))
            return array[0].cast(actual), array[1].cast(actual)
        return (pa.scalar(_parse_temporal(lo), pa.timestamp(unit, tz or "UTC")).cast(actual),
                pa.scalar(_parse_temporal(hi), pa.timestamp(unit, tz or "UTC")).cast(actual))
    array = _packed("d", [float(lo), float(hi)], pa.float64())
    return array[0], array[1]


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
    dict_cols = [n for n, c in dataset.columns.items() if c.dtype == "string" and c.domain]
    gate = Gate(project, env, purpose, where=res)
    try:
        read = gate.open(ds_name, expect=digest)
    except GateError as exc:
        return [exc.diagnostic], None
    with read:
        return _validate_read(res, ds_name, dataset, read, columns, dict_cols, restricted)


def _validate_read(res: Resolved, ds_name: str, dataset: Dataset, read: Any, columns: list[str],
                   dict_cols: list[str], restricted: bool) -> tuple[list[Diagnostic], str | None]:
    try:
        schema = read.schema
    except GateError as exc:
        return [exc.diagnostic], None
    problems: list[Diagnostic] = []
    checked: dict[str, tuple[Column, Any, Any]] = {}
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
        domain = None
        if col.domain is not None:
            domain = _domain_array(list(col.domain), col.dtype)
        checked[name] = (col, domain, _bounds(col, actual))
    reports = {name: ColumnReport() for name in checked}
    try:
        for batch in progress.batches(read.batches(list(checked), dictionary=dict_cols),
                                      f"validate {dataset.uri}", read.total_rows):
            for name, (_col, domain, bounds) in checked.items():
                arr = batch.column(batch.schema.get_field_index(name))
                report = reports[name]
                report.rows += len(arr)
                report.nulls += arr.null_count
                if domain is not None:
                    _domain_counts(arr, domain, report)
                if bounds is not None:
                    _range_counts(arr, bounds[0], bounds[1], report)
    except GateError as exc:  # nothing decoded so far is reported: the bytes are not trusted
        problems.append(exc.diagnostic)
        return problems, None
    for name, report in reports.items():
        problems.extend(_judge(res, ds_name, name, checked[name][0], report, restricted))
    return problems, read.digest


def _judge(res: Resolved, ds_name: str, name: str, col: Column, report: ColumnReport,
           restricted: bool) -> list[Diagnostic]:
    out = []
    where = ("datasets", ds_name, "columns", name)
    label = f"{ds_name}.{name}"
    if report.nulls and not col.nullable:
        out.append(res.diag("BE202", f"{label}: {report.nulls} of {report.rows} rows are null "
                            "but the column is declared nullable: false", *where, "nullable"))
    if col.max_null_fraction is not None and report.rows:
        fraction = report.nulls / report.rows
        if fraction > col.max_null_fraction:
            out.append(res.diag("BE203", f"{label}: null fraction {fraction:.4f} ({report.nulls}"
                                f" of {report.rows} rows) exceeds max_null_fraction "
                                f"{col.max_null_fraction}", *where, "max_null_fraction"))
    if report.out_of_domain:
        message = f"{label}: {report.out_of_domain} rows have values outside the domain"
        if not restricted:
            top = sorted(report.out_of_domain_values.items(), key=lambda kv: (-kv[1], kv[0]))
            message += " (" + ", ".join(f"{v!r}: {n}" for v, n in top[:EXAMPLES]) + (
                ", ..." if len(top) > EXAMPLES else "") + ")"
            hint = f"add {', '.join(repr(v) for v, _ in top[:EXAMPLES])} to the domain if valid"
        else:
            message += f" ({len(report.out_of_domain_values)} distinct values; restricted " \
                       "dataset: values not shown)"
            hint = "inspect with an approved, audited tool; values are never printed"
        out.append(res.diag("BE204", message, *where, "domain", hints=(hint,)))
    if report.below or report.above:
        lo, hi = col.range  # type: ignore[misc]
        message = (f"{label}: {report.below + report.above} rows outside range [{lo}, {hi}] "
                   f"({report.below} below, {report.above} above)")
        if not restricted and report.examples:
            message += f"; e.g. {', '.join(report.examples[:EXAMPLES])}"
        out.append(res.diag("BE205", message, *where, "range"))
    return out


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
    return digest_json({"columns": data["columns"], "format": data["format"],
                        "restricted": restricted, "v": 1})


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
        if digest is not None:
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
             "BE204": "domain", "BE205": "range"}


def _relocate(res: Resolved, ds_name: str, cached: list[dict]) -> list[Diagnostic]:
    out = []
    for item in cached:
        path = list(item["where"])
        if item["code"] in _RULE_KEY:
            path.append(_RULE_KEY[item["code"]])
        out.append(res.diag(item["code"], item["message"], *path, hints=tuple(item["hints"])))
    return out
