"""Privacy at the gate: what may leave it when a dataset is restricted.

Restriction is applied where data is read, not where messages are formatted: a decoding error
of a restricted dataset is rebuilt from safe parts (dataset, column, data row number, target
type) and the library's text, which quotes the offending cell, is dropped. Free text produced
by code that has seen restricted rows (a training's exception messages and captured output) is
withheld by the runner; strings it chooses to log (params) pass through a `Redactor` built from
the restricted string values it read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["WITHHELD", "Redactor", "csv_column_of", "decode_error_message", "first_line",
           "is_conversion_error"]

WITHHELD = "value withheld: restricted dataset"

_CSV_COLUMN = re.compile(r"In CSV column #(\d+):")
_CONVERSION = re.compile(r"conversion error to ([^:]+):|as a scalar of type ([^:]+)")
_PARSE = re.compile(r"CSV parse error: (Expected \d+ columns?, got \d+)")
# JSON lines: a value of another JSON type than the declared column's ("string to number"),
# or a number that does not fit the column ("Failed to convert JSON to int64")
_JSON_TYPE = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")
_JSON_CONVERSION = re.compile(r"Failed to convert JSON to ([\w\[\], ]+?),")


def is_conversion_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("conversion error" in text or "failed to parse string" in text
            or "failed to convert json" in text or _JSON_TYPE.search(str(exc)) is not None)


def csv_column_of(exc: BaseException, header: list[str]) -> str | None:
    """The column a pyarrow CSV error names ("In CSV column #3"), by its header name."""
    match = _CSV_COLUMN.search(str(exc))
    if match and int(match.group(1)) < len(header):
        return header[int(match.group(1))]
    return None


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def decode_error_message(exc: BaseException, dataset: str, restricted: bool,
                         header: list[str] | None = None, row: int | None = None,
                         column: str | None = None) -> str:
    """What a decoding failure may say: everything for public data, safe parts otherwise.

    `row` (1-based data row, header not counted) and `column` are filled in by the caller when
    it located the failing value; otherwise the CSV column is recovered from pyarrow's message.
    """
    raw = str(exc)
    if column is None and header is not None:
        column = csv_column_of(exc, header)
    json_type = _JSON_TYPE.search(raw)
    if column is None and json_type is not None:
        column = json_type.group(1) or None
    where = f"dataset '{dataset}'"
    if column is not None:
        where += f", column '{column}'"
    if row is not None:
        where += f", data row {row:,}"
    if json_type is not None:  # names JSON types, never a value
        return (f"{where}: a JSON {json_type.group(3)} where the column's dtype needs a "
                f"{json_type.group(2)}")
    if not restricted:
        detail = first_line(raw)
        detail = _CSV_COLUMN.sub("", detail).strip()
        return f"{where}: {detail}"
    json_conversion = _JSON_CONVERSION.search(raw)
    if json_conversion:
        return f"{where}: a value cannot be converted to {json_conversion.group(1)} ({WITHHELD})"
    conversion = _CONVERSION.search(raw)
    if conversion:
        target = (conversion.group(1) or conversion.group(2)).strip()
        return f"{where}: a value cannot be converted to {target} ({WITHHELD})"
    parse = _PARSE.search(raw)
    if parse:
        return f"{where}: CSV parse error: {parse.group(1)} (the row is withheld: restricted " \
               "dataset)"
    return f"{where}: the data cannot be decoded ({type(exc).__name__}; details withheld: " \
           "restricted dataset)"


class Redactor:
    """Finds restricted string values inside free text chosen by code that read them.

    Exact matching on tokens (words, quoted strings, the whole text): cheap, no false positives
    on numbers, and catches the common ways a value lands in a string (repr, f-strings,
    joins). Values shorter than `min_length` are not searched (they would match ordinary words).
    """

    def __init__(self, values: Iterable[str] = (), min_length: int = 3):
        self.min_length = min_length
        self.values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        self.values.update(v for v in values if isinstance(v, str) and len(v) >= self.min_length)

    def __bool__(self) -> bool:
        return bool(self.values)

    def leaks(self, text: str) -> bool:
        if not self.values or not text:
            return False
        if text in self.values:
            return True
        for token in re.findall(r"'([^']*)'|\"([^\"]*)\"", text):
            if any(t in self.values for t in token):
                return True
        return any(word in self.values for word in re.split(r"[\s,;:=()\[\]{}<>|]+", text))

    def clean(self, text: str, replacement: str = "[withheld]") -> str:
        return replacement if self.leaks(text) else text
