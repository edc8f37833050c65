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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.storage import locate
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset, _parse_temporal

__all__ = ["ColumnReport", "arrow_type", "type_accepts", "validate_dataset", "validate_env"]

BATCH_ROWS = 262_144
EXAMPLES = 3

ARROW_TYPES = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(),
    "string": pa.string(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
}
_INT_WIDTH = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


def arrow_type(dtype: str) -> pa.DataType:
    return ARROW_TYPES[dtype]


def type_accepts(dtype: str, actual: pa.DataType) -> bool:
    """Declared dtype vs stored Arrow type: equal, or a widening of the same kind."""
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if dtype in _INT_WIDTH:
        width = _INT_WIDTH[dtype]
        if pa.types.is_signed_integer(actual):
            return actual.bit_width <= width
        if pa.types.is_unsigned_integer(actual):
            return actual.bit_width < width
        return False
    if dtype == "float64":
        return pa.types.is_floating(actual)
    if dtype == "float32":
        return pa.types.is_floating(actual) and actual.bit_width <= 32
    if dtype == "bool":
        return pa.types.is_boolean(actual)
    if dtype == "string":
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or (
            hasattr(pa.types, "is_string_view") and pa.types.is_string_view(actual))
    if dtype == "date":
        return pa.types.is_date(actual)
    if dtype == "timestamp":
        return pa.types.is_timestamp(actual)
    return False


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
        if dtype in _INT_WIDTH and all(type(v) is int for v in values):
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


def _batches(dataset: Dataset, project: Project, columns: list[str],
             dictionary_columns: list[str]):
    location = locate(dataset.uri, project)
    if dataset.format == "csv":
        import pyarrow.csv as pacsv

        types = {name: arrow_type(c.dtype) for name, c in dataset.columns.items()
                 if name in columns}
        stream = location.open()
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=8 << 20),
                                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                convert_options=pacsv.ConvertOptions(
                                    column_types=types, include_columns=columns,
                                    include_missing_columns=False))
        return reader.schema, progress.batches(reader, f"validate {dataset.uri}")
    import pyarrow.parquet as pq

    handle = location.open_random()
    # pre_buffer fetches every selected column chunk of every row group up front: one
    # coalesced read per range, which object stores need, but memory then grows with the
    # file. A local file is read through a 1 MiB buffer instead: memory stays at about
    # one row group, whatever the file size, and the batches are the same.
    local = location.local is not None
    pf = pq.ParquetFile(handle, read_dictionary=dictionary_columns, pre_buffer=not local,
                        buffer_size=(1 << 20) if local else 0)
    schema = pf.schema_arrow
    present = [c for c in columns if c in schema.names]
    return schema, progress.batches(pf.iter_batches(batch_size=BATCH_ROWS, columns=present,
                                                    use_threads=True),
                                    f"validate {dataset.uri}", pf.metadata.num_rows)


def validate_dataset(res: Resolved, ds_name: str, project: Project) -> list[Diagnostic]:
    """Every violation of `ds_name`'s column declarations, one diagnostic per (column, rule)."""
    env = res.env
    dataset = env.datasets[ds_name]
    restricted = env.restricted(ds_name)
    columns = list(dataset.columns)
    dict_cols = [n for n, c in dataset.columns.items() if c.dtype == "string" and c.domain]
    try:
        schema, batches = _batches(dataset, project, columns, dict_cols)
    except (OSError, pa.ArrowInvalid) as exc:
        return [res.diag("BE053", f"dataset '{ds_name}': cannot read '{dataset.uri}': "
                         f"{str(exc).splitlines()[0]}", "datasets", ds_name, "uri")]
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
        for batch in batches:
            for name, (_col, domain, bounds) in checked.items():
                arr = batch.column(batch.schema.get_field_index(name))
                report = reports[name]
                report.rows += len(arr)
                report.nulls += arr.null_count
                if domain is not None:
                    _domain_counts(arr, domain, report)
                if bounds is not None:
                    _range_counts(arr, bounds[0], bounds[1], report)
    except (OSError, pa.ArrowInvalid) as exc:
        problems.append(res.diag("BE201" if "convert" in str(exc).lower() else "BE053",
                                 f"dataset '{ds_name}': {str(exc).splitlines()[0]}",
                                 "datasets", ds_name, "uri"))
        return problems
    for name, report in reports.items():
        problems.extend(_judge(res, ds_name, name, checked[name][0], report, restricted))
    return problems


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
                 datasets: list[str] | None = None) -> list[Diagnostic]:
    """Validate each dataset; with `digests` (from the lock), results are cached."""
    problems: list[Diagnostic] = []
    for ds_name in datasets or sorted(res.env.datasets):
        dataset = res.env.datasets[ds_name]
        cache_file = None
        if digests and ds_name in digests:
            key = digest_json({"data": digests[ds_name],
                               "spec": _spec_digest(dataset, res.env.restricted(ds_name))})
            hexkey = key.split(":", 1)[1]
            cache_file = project.state_dir / "cache" / "validate" / hexkey[:2] / f"{hexkey}.json"
            if cache_file.is_file():
                try:
                    cached = json.loads(cache_file.read_text())
                    problems.extend(_relocate(res, ds_name, cached))
                    continue
                except (OSError, ValueError, KeyError):
                    pass
        found = validate_dataset(res, ds_name, project)
        problems.extend(found)
        if cache_file is not None and not any(p.code == "BE053" for p in found):
            atomic_write_text(cache_file, json.dumps([_portable(p, res, ds_name) for p in found]))
    return problems


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
