"""A Parquet file's row count from its footer, without importing pyarrow.

The lock needs only `num_rows` (field 3 of the footer's thrift `FileMetaData`). Importing
pyarrow costs a fresh process about a quarter of a second, which would be most of the fixed
cost of `buildenv lock`; reading the footer is a few hundred bytes of thrift compact protocol.
The parse checks what pyarrow would: the `PAR1` magic at both ends, a footer that fits in the
file, and row groups whose `num_rows` add up to the file's. Anything unexpected returns None
and the caller asks pyarrow, which then says precisely what is wrong with the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["footer_rows"]

MAGIC = b"PAR1"

# thrift compact protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = \
    range(13)


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Bad("truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise _Bad("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 64:
            raise _Bad("nested too deep")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.pos += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            length = self.varint()  # read first: `self.pos += ...` would use the old pos
            self.pos += length
        elif kind in (_LIST, _SET):
            self._skip_list(depth)
        elif kind == _MAP:
            self._skip_map(depth)
        elif kind == _STRUCT:
            for _field, ftype in self.fields():
                self.skip(ftype, depth + 1)
        else:
            raise _Bad(f"unknown type {kind}")
        if self.pos > len(self.data):
            raise _Bad("truncated")

    def _skip_list(self, depth: int) -> None:
        size, elem = self.list_header()
        if elem in (_TRUE, _FALSE):
            self.pos += size  # booleans in containers take one byte each
            return
        for _ in range(size):
            self.skip(elem, depth + 1)

    def _skip_map(self, depth: int) -> None:
        size = self.varint()
        self._fits(size)
        if size:
            types = self.byte()
            for _ in range(size):
                self.skip(types >> 4, depth + 1)
                self.skip(types & 0x0F, depth + 1)

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        self._fits(size)
        return size, header & 0x0F

    def _fits(self, size: int) -> None:
        """Every element of a container takes at least a byte: a declared size larger than
        the bytes left is a bad footer, not a loop of billions of empty steps."""
        if size > len(self.data) - self.pos:
            raise _Bad("container larger than the footer")

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, type) of each field of a struct, up to its STOP."""
        last = 0
        while True:
            header = self.byte()
            kind = header & 0x0F
            if kind == _STOP:
                return
            delta = header >> 4
            last = last + delta if delta else self.zigzag()
            yield last, kind


def parse_num_rows(footer: bytes) -> int:
    """`num_rows` of a thrift-compact FileMetaData, checked against its row groups."""
    reader = _Reader(footer)
    num_rows = None
    group_rows = 0
    for field_id, kind in reader.fields():
        if field_id == 3 and kind == _I64:
            num_rows = reader.zigzag()
        elif field_id == 4 and kind == _LIST:
            size, elem = reader.list_header()
            if elem != _STRUCT:
                raise _Bad("row groups are not structs")
            for _ in range(size):
                rows = None
                for gid, gkind in reader.fields():
                    if gid == 3 and gkind == _I64:
                        rows = reader.zigzag()
                    else:
                        reader.skip(gkind)
                if rows is None or rows < 0:
                    raise _Bad("row group without num_rows")
                group_rows += rows
        else:
            reader.skip(kind)
    if num_rows is None or num_rows < 0 or num_rows != group_rows:
        raise _Bad("num_rows missing or inconsistent")
    return num_rows


def footer_rows(read_at: Callable[[int, int], bytes], size: int) -> int | None:
    """Rows of a Parquet file of `size` bytes; `read_at(offset, n)` returns bytes. None when
    the footer is not what this parser expects (the caller then asks pyarrow)."""
    try:
        if size < 12:
            return None
        tail = read_at(size - 8, 8)
        if len(tail) != 8 or tail[4:] != MAGIC or read_at(0, 4) != MAGIC:
            return None
        length = int.from_bytes(tail[:4], "little")
        if length <= 0 or length > size - 12:
            return None
        footer = read_at(size - 8 - length, length)
        if len(footer) != length:
            return None
        return parse_num_rows(footer)
    except (_Bad, OSError, IndexError, ValueError):
        return None
