"""One reader per storage format, configured once: how dataset bytes become typed Arrow batches.

Every caller (lock, validate, drift, `ctx.read`, evaluation) decodes through these readers, so
the typing and null rules are the same everywhere:

- **CSV** has no types: every declared column is typed by the environment, never inferred.
  An unquoted empty field is null in a column of any dtype, strings included (as pandas and
  DuckDB read it); a quoted empty field (`""`) is the empty string. Quoted fields may hold
  newlines (a row is not a line). The first row is the header; undeclared columns are not
  decoded. `timestamp` columns take ISO 8601 text with or without a zone offset (no offset means
  UTC). Only an empty field is null: `NA` or `null` are values (and fail a numeric column).
- **Parquet** carries types: the stored type must be the declared one or a widening of it
  (`type_accepts`). String columns may be read dictionary-encoded (validation and drift compute
  on the dictionary instead of on every row).
- **JSON lines** (serving data: a request log, one JSON object per line) is typed by the
  environment like CSV: numbers, strings and booleans as JSON has them (an integer is accepted
  for a float column), dates and timestamps as ISO 8601 strings. A key missing from a line, or
  `null`, is null. The columns are the keys of any line; undeclared ones are not decoded.

A format reads from `Bytes`: something that can be opened as a random-access pyarrow file any
number of times (a pinned local file, or a verified in-memory copy of a remote object). A new
format is a subclass of `FileFormat` added to `FORMATS`; docs/data.md says what it must provide.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.lock.csv_rows import RowCounter

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.env.spec import Column

# Deferred imports (pyarrow): pyarrow.parquet and pyarrow.csv take a quarter of a second to import;
# `buildenv lock` reaches this module but hashes files without decoding them.

__all__ = ["ARROW_TYPES", "BATCH_ROWS", "FORMATS", "Bytes", "CsvFormat", "FileFormat",
           "JsonFormat", "ParquetFormat", "arrow_type", "declared_types", "format_of",
           "parse_timestamps", "type_accepts"]

BATCH_ROWS = 262_144
CSV_BLOCK = 8 << 20  # 8 MiB: large enough for the parser to run at full speed

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
            return bool(actual.bit_width <= width)
        if pa.types.is_unsigned_integer(actual):
            return bool(actual.bit_width < width)
        return False
    if dtype == "float64":
        return bool(pa.types.is_floating(actual))
    if dtype == "float32":
        return bool(pa.types.is_floating(actual) and actual.bit_width <= 32)
    if dtype == "bool":
        return bool(pa.types.is_boolean(actual))
    if dtype == "string":
        return bool(pa.types.is_string(actual) or pa.types.is_large_string(actual) or (
            hasattr(pa.types, "is_string_view") and pa.types.is_string_view(actual)))
    if dtype == "date":
        return bool(pa.types.is_date(actual))
    if dtype == "timestamp":
        return bool(pa.types.is_timestamp(actual))
    return False


def declared_types(batch: pa.RecordBatch, declared: Mapping[str, Column]) -> pa.RecordBatch:
    """The batch with every accepted stored type widened to the declared one (int32 -> int64,
    dictionary strings -> strings): what training code and evaluation see, whatever the file."""
    arrays, fields, changed = [], [], False
    for name, array in zip(batch.schema.names, batch.columns):
        col = declared.get(name)
        target = arrow_type(col.dtype) if col is not None else None
        if (col is not None and target is not None and array.type != target
                and type_accepts(col.dtype, array.type)
                and not (pa.types.is_timestamp(array.type) and pa.types.is_timestamp(target)
                         and array.type.unit != target.unit)):
            array = array.cast(target)  # a timestamp keeps its stored precision
            changed = True
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)) if changed else batch


class Bytes(Protocol):
    """The bytes of one dataset file, fixed for the duration of a read."""

    def open(self) -> pa.NativeFile:
        """A new random-access file positioned at the start."""


class FileFormat(ABC):
    """How one storage format is decoded; stateless, shared by every caller."""

    name: str

    @abstractmethod
    def schema(self, source: Bytes, declared: Mapping[str, Column]) -> pa.Schema:
        """The stored columns and their types (CSV: the header, typed by the environment)."""

    @abstractmethod
    def batches(self, source: Bytes, declared: Mapping[str, Column], columns: Sequence[str], *,
                batch_rows: int = BATCH_ROWS, dictionary: Sequence[str] = ()
                ) -> Iterator[pa.RecordBatch]:
        """Record batches of `columns` (present in the file), in file order."""

    @abstractmethod
    def count_rows(self, source: Bytes) -> int:
        """Number of data rows (the lock records it)."""


class ParquetFormat(FileFormat):
    name = "parquet"

    def _file(self, source: Bytes, dictionary: Sequence[str] = ()) -> Any:
        import pyarrow.parquet as pq

        # A 1 MiB read buffer instead of pre-buffering whole row groups: memory stays at about
        # one row group whatever the file size (the bytes are local or already in memory).
        return pq.ParquetFile(source.open(), read_dictionary=list(dictionary) or None,
                              pre_buffer=False, buffer_size=1 << 20)

    def schema(self, source: Bytes, declared: Mapping[str, Column]) -> pa.Schema:
        return self._file(source).schema_arrow

    def batches(self, source: Bytes, declared: Mapping[str, Column], columns: Sequence[str], *,
                batch_rows: int = BATCH_ROWS, dictionary: Sequence[str] = ()
                ) -> Iterator[pa.RecordBatch]:
        pf = self._file(source, dictionary)
        present = [c for c in columns if c in pf.schema_arrow.names]
        return iter(pf.iter_batches(batch_size=batch_rows, columns=present, use_threads=True))

    def count_rows(self, source: Bytes) -> int:
        return int(self._file(source).metadata.num_rows)


class CsvFormat(FileFormat):
    name = "csv"

    def header(self, source: Bytes) -> list[str]:
        """Column names of the first row (quoted names, and newlines inside them, allowed)."""
        data = b""
        with source.open() as handle:
            while (end := _record_end(data)) is None:
                chunk = handle.read(64 << 10)
                if not chunk:
                    end = len(data)
                    break
                data += chunk
        text = data[:end].decode("utf-8", errors="replace").lstrip("\ufeff")
        return next(csv.reader(io.StringIO(text, newline="")), [])

    def schema(self, source: Bytes, declared: Mapping[str, Column]) -> pa.Schema:
        return pa.schema([pa.field(n, arrow_type(declared[n].dtype) if n in declared
                                   else pa.string()) for n in self.header(source)])

    def _options(self, declared: Mapping[str, Column], columns: Sequence[str]) -> Any:
        import pyarrow.csv as pacsv

        # timestamps are read as text and parsed below: pyarrow's CSV converter refuses text
        # without a zone offset for a UTC column, and the environment allows both forms
        types = {c: (pa.string() if declared[c].dtype == "timestamp"
                     else arrow_type(declared[c].dtype)) for c in columns if c in declared}
        return (pacsv.ReadOptions(block_size=CSV_BLOCK, use_threads=True),
                pacsv.ParseOptions(newlines_in_values=True),
                pacsv.ConvertOptions(column_types=types, include_columns=list(columns),
                                     null_values=[""], strings_can_be_null=True,
                                     quoted_strings_can_be_null=False))

    def batches(self, source: Bytes, declared: Mapping[str, Column], columns: Sequence[str], *,
                batch_rows: int = BATCH_ROWS, dictionary: Sequence[str] = ()
                ) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pacsv

        names = set(self.header(source))
        present = [c for c in columns if c in names]
        timestamps = [c for c in present if c in declared and declared[c].dtype == "timestamp"]
        read, parse, convert = self._options(declared, present)
        reader = pacsv.open_csv(source.open(), read_options=read, parse_options=parse,
                                convert_options=convert)
        for batch in reader:
            if timestamps:
                batch = parse_timestamps(batch, timestamps)
            if dictionary:
                batch = _dictionary_encode(batch, dictionary)
            yield batch

    def count_rows(self, source: Bytes) -> int:
        """Records outside quoted fields, without parsing fields (`csv_rows`): what the lock
        records; the decoder yields as many rows from a well-formed file."""
        counter = RowCounter()
        with source.open() as stream:
            while chunk := stream.read(CSV_BLOCK):
                counter.feed(chunk)
        return counter.rows()


class JsonFormat(FileFormat):
    """Newline-delimited JSON objects, read in blocks of whole lines (bounded memory)."""

    name = "json"

    def _blocks(self, source: Bytes) -> Iterator[bytes]:
        """The file in pieces of about CSV_BLOCK bytes, each ending at a line end."""
        carry = b""
        with source.open() as handle:
            while chunk := handle.read(CSV_BLOCK):
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield data[:cut]
                carry = data[cut:]
        if carry.strip():
            yield carry  # a last line without a line end

    def schema(self, source: Bytes, declared: Mapping[str, Column]) -> pa.Schema:
        """Every key of every line, in order of first appearance: declared ones typed as
        declared, others as JSON has them (one parsing pass, a block at a time)."""
        import pyarrow.json as pajson

        found: dict[str, pa.DataType] = {}
        for block in self._blocks(source):
            for f in pajson.read_json(pa.BufferReader(block)).schema:
                found.setdefault(f.name, f.type)
        return pa.schema([pa.field(n, arrow_type(declared[n].dtype) if n in declared else t)
                          for n, t in found.items()])

    def batches(self, source: Bytes, declared: Mapping[str, Column], columns: Sequence[str], *,
                batch_rows: int = BATCH_ROWS, dictionary: Sequence[str] = ()
                ) -> Iterator[pa.RecordBatch]:
        import pyarrow.json as pajson

        wanted = [c for c in columns if c in declared]
        if not wanted:  # rows only
            for block in self._blocks(source):
                rows = pajson.read_json(pa.BufferReader(block)).num_rows
                yield pa.record_batch([pa.nulls(rows)], names=["_"]).select([])
            return
        textual = [c for c in wanted if declared[c].dtype in ("date", "timestamp")]
        explicit = pa.schema([pa.field(c, pa.string() if c in textual
                                       else arrow_type(declared[c].dtype)) for c in wanted])
        options = pajson.ParseOptions(explicit_schema=explicit,
                                      unexpected_field_behavior="ignore")
        for block in self._blocks(source):
            table = pajson.read_json(pa.BufferReader(block), parse_options=options)
            for batch in table.select(wanted).to_batches(max_chunksize=batch_rows):
                if textual:
                    batch = _temporal_text(batch, declared, textual)
                if dictionary:
                    batch = _dictionary_encode(batch, dictionary)
                yield batch

    def count_rows(self, source: Bytes) -> int:
        """Lines holding something (blank lines are not rows)."""
        rows = 0
        for block in self._blocks(source):
            rows += sum(1 for line in block.split(b"\n") if line.strip())
        return rows


def _temporal_text(batch: pa.RecordBatch, declared: Mapping[str, Column],
                   names: Sequence[str]) -> pa.RecordBatch:
    """ISO 8601 text of JSON lines as dates (`YYYY-MM-DD`) and UTC timestamps."""
    stamps = [n for n in names if declared[n].dtype == "timestamp"]
    if stamps:
        batch = parse_timestamps(batch, stamps)
    arrays = [pc.cast(a, pa.date32()) if n in names and declared[n].dtype == "date" else a
              for n, a in zip(batch.schema.names, batch.columns)]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def format_of(uri: str, default: str) -> str:
    """The format a uri's extension names (`.csv`, `.parquet`, `.jsonl`), else `default`."""
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "json"
    return default


def _record_end(data: bytes) -> int | None:
    """Offset of the newline that ends the first CSV record (outside quotes), if seen yet."""
    quoted = False
    for i, byte in enumerate(data):
        if byte == 0x22:  # '"': doubled quotes toggle twice, which is the same as not at all
            quoted = not quoted
        elif byte in (0x0A, 0x0D) and not quoted:
            return i
    return None


_ZONED = r"\d\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|z|[+-]\d\d(:?\d\d)?)$"  # a time, then an offset
_UTC = pa.timestamp("us", tz="UTC")


def parse_timestamps(batch: pa.RecordBatch, names: Sequence[str]) -> pa.RecordBatch:
    """ISO 8601 text -> UTC timestamps; text without an offset is UTC. The common cases (every
    value with an offset, or none with one) take one native cast; a mix takes two and a regex."""
    arrays = []
    for name, array in zip(batch.schema.names, batch.columns):
        if name in names:
            array = _utc(array)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _utc(array: pa.Array) -> pa.Array:
    for target in (_UTC, pa.timestamp("us")):
        try:
            return pc.cast(array, target).cast(_UTC)
        except pa.ArrowInvalid:
            continue
    zoned = pc.match_substring_regex(array, _ZONED)
    aware = pc.cast(pc.if_else(zoned, array, None), _UTC)
    naive = pc.cast(pc.if_else(zoned, None, array), pa.timestamp("us")).cast(_UTC)
    return pc.coalesce(aware, naive)


def _dictionary_encode(batch: pa.RecordBatch, names: Sequence[str]) -> pa.RecordBatch:
    arrays = [pc.dictionary_encode(a) if n in names and pa.types.is_string(a.type) else a
              for n, a in zip(batch.schema.names, batch.columns)]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


FORMATS: dict[str, FileFormat] = {"parquet": ParquetFormat(), "csv": CsvFormat(),
                                  "json": JsonFormat()}
