"""Counting a CSV file's records at memory speed, quote-aware only where quotes appear.

The lock records a CSV dataset's row count. Parsing the file for it (as the decoder does) costs
several times the hash; counting records needs only the line terminators that are outside
quoted fields. `RowCounter` is fed the very chunks being hashed (on another core) and counts
them three ways, cheapest first:

- a chunk with no quote, no carriage return and no empty line: `bytes.count(b"\\n")`;
- a chunk with quotes but no carriage return: bit-parallel, as SIMD JSON parsers find strings.
  The quote and newline masks are packed 64 bytes to a word; a prefix XOR within each word
  plus a carry across words marks the bytes inside quoted fields, and the newlines outside
  them are counted with a popcount. About as fast as hashing the chunk;
- otherwise, vectorised with numpy: quotes toggle "inside a quoted field" (RFC 4180's `""`
  escape toggles twice), newlines and lone/CRLF carriage returns outside quotes end records,
  and a record with no byte between two terminators is an empty line (skipped, as the decoder
  skips it). This model holds when every opening quote starts a field, which is checked;
- otherwise (a quote inside an unquoted field, which the decoder reads as a literal quote), a
  byte-by-byte state machine for that chunk.

The count matches the decoder's (`pyarrow.csv` with `newlines_in_values=True`) on well-formed
files: records = non-empty lines outside quotes, minus the header. It does not parse fields: a
record with the wrong number of fields is counted, and `buildenv validate` reports it.
"""

from __future__ import annotations

from typing import Any

# Deferred imports (numpy): `buildenv lock` counts the rows of small CSV files without loading
# numpy.

__all__ = ["RowCounter", "count_rows"]

_LF, _CR, _QUOTE, _COMMA = 10, 13, 34, 44

# where a chunk ends, for the next one
_FIELD_START, _UNQUOTED, _QUOTED, _AFTER_CLOSE = range(4)


class RowCounter:
    """Feed chunks in order, then `rows()`."""

    def __init__(self) -> None:
        self.records = 0  # terminated, non-empty records
        self.content = False  # the current (unterminated) record has a byte
        self.state = _FIELD_START
        self.prev_cr = False  # the previous chunk ended with a CR outside quotes
        self._mask: Any = None  # a byte mask, reused from chunk to chunk

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Count the records ending in `chunk` (not kept: a reused buffer may be passed)."""
        data = bytes(chunk) if isinstance(chunk, memoryview) else chunk
        if not data:
            return
        if (self.state != _QUOTED and not self.prev_cr and b'"' not in data
                and b"\r" not in data):
            n = _count_lf(data)
            if not n or not _empty_line(data, self.content):
                self.records += n
                last = data[-1]
                self.content = last != _LF if n else True
                self.state = _FIELD_START if last in (_LF, _COMMA) else _UNQUOTED
                return
        if b"\r" not in data and not self.prev_cr and self._bitwise(data):
            return
        if not self._vectorised(data):
            self._bytewise(data)

    def rows(self) -> int:
        records = self.records + (1 if self.content else 0)
        return max(records - 1, 0)  # the first record is the header

    # --- numpy, 64 bytes a word: chunks without a carriage return ----------------------------
    def _bitwise(self, data: bytes | bytearray) -> bool:
        import numpy as np

        a = np.frombuffer(data, dtype=np.uint8)
        if self._mask is None or len(self._mask) < len(a):
            self._mask = np.empty(len(a), dtype=bool)  # reused: no page faults per chunk
        mask = self._mask[:len(a)]
        quotes = _words(np.equal(a, _QUOTE, out=mask))
        lf = _words(np.equal(a, _LF, out=mask))
        inside0 = self.state == _QUOTED
        # bit i of `inside`: an odd number of quotes up to and including byte i (with the
        # chunk's starting state): set on the bytes of a quoted field and its opening quote
        inside = _prefix_xor(quotes)
        carry = np.bitwise_xor.accumulate(inside >> np.uint64(63))
        before = np.empty_like(carry)
        before[0] = inside0
        before[1:] = carry[:-1] ^ np.uint64(inside0)
        inside ^= np.uint64(0) - before
        openers = quotes & inside
        if openers.any():
            # every opening quote starts a field: the byte before it ends one (or is the
            # first half of a `""` escape)
            field_end = quotes | lf | _words(np.equal(a, _COMMA, out=mask))
            ok_before = _shifted(field_end, self.state in (_FIELD_START, _AFTER_CLOSE))
            if (openers & ~ok_before).any():
                return False
        ends = lf & ~inside  # record terminators
        # a terminator right after a terminator (or first, after one) ends an empty line
        empty = ends & _shifted(lf, not self.content)
        self.records += int(np.bitwise_count(ends).sum()) - int(np.bitwise_count(empty).sum())
        inside_end = bool(inside0 ^ int(carry[-1]))
        last = data[-1]
        self.content = inside_end or last != _LF
        if inside_end:
            self.state = _QUOTED
        elif last in (_LF, _COMMA):
            self.state = _FIELD_START
        elif last == _QUOTE:
            self.state = _AFTER_CLOSE
        else:
            self.state = _UNQUOTED
        return True

    # --- numpy: one pass of vector operations per chunk ---------------------------------------
    def _vectorised(self, data: bytes | bytearray) -> bool:
        import numpy as np

        a = np.frombuffer(data, dtype=np.uint8)
        n = len(a)
        quotes = np.flatnonzero(a == _QUOTE)
        inside = self.state == _QUOTED
        if len(quotes):
            # quote k opens a field when the state before it is "outside": even k if the
            # chunk starts outside quotes
            openers = quotes[(1 if inside else 0)::2]
            before = openers - 1
            first = before < 0
            prev = a[np.maximum(before, 0)]
            ok = (prev == _COMMA) | (prev == _LF) | (prev == _CR) | (prev == _QUOTE)
            if first.any():  # the opener is the chunk's first byte
                ok[first] = self.state in (_FIELD_START, _AFTER_CLOSE)
            if not ok.all():
                return False  # a literal quote inside an unquoted field: byte by byte
        lf = np.flatnonzero(a == _LF)
        cr = np.flatnonzero(a == _CR) if b"\r" in data else lf[:0]
        if len(quotes) or inside:  # keep the terminators outside quoted fields
            lf = lf[((np.searchsorted(quotes, lf) + inside) & 1) == 0]
            cr = cr[((np.searchsorted(quotes, cr) + inside) & 1) == 0]
        skip_first_lf = bool(self.prev_cr and len(lf) and lf[0] == 0)
        if skip_first_lf:
            lf = lf[1:]  # the LF of a CRLF split between chunks: already counted
        if len(cr):
            # a CR followed by LF is one terminator starting at the CR
            paired = np.zeros(len(lf), dtype=bool)
            has_prev = lf > 0
            paired[has_prev] = a[lf[has_prev] - 1] == _CR
            followed = np.zeros(len(cr), dtype=bool)
            inner = cr < n - 1
            followed[inner] = a[cr[inner] + 1] == _LF
            lone_cr = cr[~followed]
            starts = np.concatenate([np.where(paired, lf - 1, lf), lone_cr])
            ends = np.concatenate([lf + 1, lone_cr + 1])
            order = np.argsort(starts, kind="stable")
            starts, ends = starts[order], ends[order]
        else:
            starts, ends = lf, lf + 1
        if len(starts):
            begin = 1 if skip_first_lf else 0
            previous = np.concatenate([[begin], ends[:-1]])
            nonempty = starts > previous
            if not self.content and starts[0] == begin:
                nonempty[0] = False
            elif self.content:
                nonempty[0] = True
            self.records += int(np.count_nonzero(nonempty))
            self.content = bool(ends[-1] < n)
        else:
            self.content = self.content or n > (1 if skip_first_lf else 0)
        inside = bool((inside + len(quotes)) & 1)
        last = data[-1]
        self.prev_cr = (not inside) and last == _CR
        if inside:
            self.state = _QUOTED
        elif last in (_LF, _CR, _COMMA):
            self.state = _FIELD_START
        elif last == _QUOTE:
            self.state = _AFTER_CLOSE  # outside quotes after a quote: it closed a field
        else:
            self.state = _UNQUOTED
        return True

    # --- the reference: what the decoder does, one byte at a time ------------------------------
    def _bytewise(self, data: bytes | bytearray) -> None:
        state, content, records, prev_cr = self.state, self.content, self.records, self.prev_cr
        for byte in data:
            if prev_cr:
                prev_cr = False
                if byte == _LF:
                    continue  # second half of a CRLF
            if state == _QUOTED:
                content = True
                if byte == _QUOTE:
                    state = _AFTER_CLOSE
                continue
            if byte in (_LF, _CR):
                if content:
                    records += 1
                content = False
                state = _FIELD_START
                prev_cr = byte == _CR
                continue
            content = True
            if byte == _QUOTE:
                if state in (_FIELD_START, _AFTER_CLOSE):
                    state = _QUOTED  # opens a field, or `""` inside one
                # else: a literal quote inside an unquoted field
            elif byte == _COMMA:
                state = _FIELD_START
            else:
                state = _UNQUOTED
        self.state, self.content, self.records, self.prev_cr = state, content, records, prev_cr


def _words(mask: Any) -> Any:
    """A boolean array packed little-endian into uint64 words (bit i of word k: byte 64k+i)."""
    import numpy as np

    packed = np.packbits(mask, bitorder="little")
    if len(packed) % 8:
        packed = np.concatenate([packed, np.zeros(8 - len(packed) % 8, dtype=np.uint8)])
    return packed.view("<u8")


def _prefix_xor(words: Any) -> Any:
    """Bit i of each word becomes the XOR of its bits 0..i."""
    import numpy as np

    out = words ^ (words << np.uint64(1))
    for shift in (2, 4, 8, 16, 32):
        out ^= out << np.uint64(shift)
    return out


def _shifted(words: Any, first: bool) -> Any:
    """Each bit moved to the next byte's place (bit i of the result: bit i-1 of the input),
    with `first` as the bit before the chunk."""
    import numpy as np

    carry = np.empty_like(words)
    carry[0] = first
    carry[1:] = words[:-1] >> np.uint64(63)
    return (words << np.uint64(1)) | carry


def _count_lf(data: bytes | bytearray) -> int:
    """`data.count(b"\\n")`, vectorised: several times faster on large chunks."""
    if len(data) < 4096:
        return data.count(b"\n")
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _LF))


def _empty_line(data: bytes | bytearray, content: bool) -> bool:
    """Whether `data` (no quote, no CR) holds an empty line: two adjacent LFs, or an LF first
    when the record before the chunk is empty. `b"\\n\\n" in data` would stop at every LF;
    comparing 16-bit words at both alignments is one fast pass."""
    import numpy as np

    if data[0] == _LF and not content:
        return True
    pair = 0x0A0A
    even = np.frombuffer(data, dtype=np.uint16, count=len(data) // 2)
    odd = np.frombuffer(data, dtype=np.uint16, offset=1, count=(len(data) - 1) // 2)
    return bool((even == pair).any() or (odd == pair).any())


def count_rows(data: bytes, chunk: int = 8 << 20) -> int:
    """Rows of a whole CSV text (tests, small files)."""
    counter = RowCounter()
    for start in range(0, len(data), chunk):
        counter.feed(data[start:start + chunk])
    return counter.rows()
