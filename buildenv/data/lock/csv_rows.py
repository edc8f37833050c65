"""Counting a CSV file's records at memory speed, beside the hash.

The lock records a CSV dataset's row count. Parsing the file for it (as the decoder does) costs
several times the hash; counting records needs only the line terminators outside quoted fields.
`RowCounter` is fed the very chunks being hashed (on another core) and counts them in blocks
small enough to stay in the CPU's cache, bit-parallel as SIMD JSON parsers find strings:

- the quote, LF, CR and comma bytes of a block become bit masks packed 64 bytes to a word
  (numpy compares and packs at memory speed; a block without a quote or a CR skips those);
- a prefix XOR within each word plus a carry across words marks the bytes inside quoted fields
  (RFC 4180's `""` escape toggles twice, so it needs no special case);
- a terminator (LF or CR) outside quotes ends a record unless the byte before it is also a
  terminator: that is the LF of a CRLF, or an empty line, which the decoder skips. A popcount
  counts them.

The parity model holds when every quote that opens a field comes right after a field's start
(a comma, a terminator, the file's start, or the quote of a `""`), which is checked with the
comma mask. A quote inside an unquoted field is a literal (as the decoder reads it): up to
`_LITERALS` of them per block are taken out of the quote mask and the block recounted; a block
with more is counted by the byte-by-byte state machine, which is the reference.

A UTF-8 byte-order mark at the start is not data (the decoder skips it). An unterminated quoted
field runs to the end of the file, as the decoder reads it. The count matches the decoder's
(`pyarrow.csv` with `newlines_in_values=True`): records = non-empty lines outside quotes,
minus the header. It does not parse fields: a record with the wrong number of fields is
counted, and `buildenv validate` reports it.
"""

from __future__ import annotations

from typing import Any

# Deferred imports (numpy): `buildenv lock` counts the rows of small CSV files without loading
# numpy.

__all__ = ["RowCounter", "count_rows"]

_LF, _CR, _QUOTE, _COMMA = 10, 13, 34, 44
_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 18  # bytes counted at a time: the byte mask and its words stay in the L2 cache
_SMALL = 4096  # below this, the state machine is cheaper than numpy's per-call cost
_LITERALS = 8  # literal quotes taken out of a block's mask before it is counted byte by byte

# where a chunk ends, for the next one
_FIELD_START, _UNQUOTED, _QUOTED, _AFTER_CLOSE = range(4)


class RowCounter:
    """Feed chunks in order, then `rows()`."""

    def __init__(self) -> None:
        self.records = 0  # terminated, non-empty records
        self.content = False  # the current (unterminated) record has a byte
        self.state = _FIELD_START
        self.prev_cr = False  # the last byte was a CR outside quotes
        self._head: bytes | None = b""  # the file's first bytes, until a BOM is ruled out
        self._mask: Any = None  # a block's byte mask, reused

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Count the records ending in `chunk` (not kept: a reused buffer may be passed)."""
        data = bytes(chunk) if isinstance(chunk, memoryview) else chunk
        start = 0
        if self._head is not None:  # the first bytes: a UTF-8 BOM is not data
            start = 3 - len(self._head)
            head = self._head + bytes(data[:start])
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return
            self._head = None
            if head != _BOM:
                self._count(head, 0)
        self._count(data, start)

    def rows(self) -> int:
        if self._head:  # a file of one or two bytes that begin a BOM
            head, self._head = self._head, None
            self._count(head, 0)
        records = self.records + (1 if self.content else 0)
        return max(records - 1, 0)  # the first record is the header

    def _count(self, data: bytes | bytearray, start: int) -> None:
        if len(data) - start < _SMALL:
            if start < len(data):
                self._bytewise(data[start:])
            return
        import numpy as np

        if self._mask is None:
            self._mask = np.empty(_BLOCK, dtype=bool)
        for begin in range(start, len(data), _BLOCK):
            end = min(begin + _BLOCK, len(data))
            if not self._bitwise(data, begin, end):
                self._bytewise(data[begin:end])

    # --- numpy, 64 bytes a word ---------------------------------------------------------------
    def _bitwise(self, data: bytes | bytearray, begin: int, end: int) -> bool:
        """Count the records of `data[begin:end]`; False (nothing changed) if it holds more
        literal quotes than are worth taking out one at a time."""
        import numpy as np

        a = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=begin)
        mask = self._mask[:end - begin]
        has_cr = data.find(b"\r", begin, end) >= 0
        inside0 = self.state == _QUOTED
        lf = _words(np.equal(a, _LF, out=mask))
        term = lf | _words(np.equal(a, _CR, out=mask)) if has_cr else lf
        if inside0 or data.find(b'"', begin, end) >= 0:
            quotes = _words(np.equal(a, _QUOTE, out=mask))
            field_end: Any = None
            for _ in range(_LITERALS + 1):
                inside, inside_end = _inside(quotes, inside0)
                openers = quotes & inside
                if not openers.any():
                    break
                # every opening quote starts a field: the byte before it ends one (or is the
                # first half of a `""` escape)
                if field_end is None:
                    field_end = term | _words(np.equal(a, _COMMA, out=mask))
                ok = _shifted(field_end | quotes, self.state in (_FIELD_START, _AFTER_CLOSE))
                ok = openers & ~ok
                if not ok.any():
                    break
                bad = np.flatnonzero(ok)
                word = int(bad[0])  # the first literal quote is data: out of the mask
                bits = int(ok[word])
                quotes[word] ^= np.uint64(bits & -bits)
            else:
                return False
            ends = term & ~inside
        else:
            quotes, ends, inside_end = None, term, False
        # a terminator right after a terminator (or first, after one) ends no record
        records = ends & ~_shifted(term, not self.content)
        self.records += int(np.bitwise_count(records).sum())
        last = data[end - 1]
        outside_term = not inside_end and last in (_LF, _CR)
        self.content = not outside_term
        self.prev_cr = outside_term and last == _CR
        if inside_end:
            self.state = _QUOTED
        elif last in (_LF, _CR, _COMMA):
            self.state = _FIELD_START
        elif last == _QUOTE and quotes is not None and _last_bit(quotes, end - begin):
            self.state = _AFTER_CLOSE  # a quote that closed a field, not a literal one
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


def _inside(quotes: Any, inside0: bool) -> tuple[Any, bool]:
    """Bit i set when an odd number of quotes, counting from a start `inside0`, lie up to and
    including byte i: the bytes of quoted fields with their opening quotes. And whether the
    block ends inside a quoted field."""
    import numpy as np

    inside = np.left_shift(quotes, 1)
    inside ^= quotes
    step = np.empty_like(inside)
    for shift in (2, 4, 8, 16, 32):  # prefix XOR within each word, in place
        np.left_shift(inside, shift, out=step)
        inside ^= step
    np.right_shift(inside, 63, out=step)
    carry = np.bitwise_xor.accumulate(step)  # the parity after each word
    parity = int(carry[-1])
    # the words after an odd count (with the start) flip entirely
    step[0] = inside0
    np.bitwise_xor(carry[:-1], int(inside0), out=step[1:])
    np.negative(step, out=step)
    inside ^= step
    return inside, bool(inside0 ^ parity)


def _shifted(words: Any, first: bool) -> Any:
    """Each bit moved to the next byte's place (bit i of the result: bit i-1 of the input),
    with `first` as the bit before the block."""
    import numpy as np

    carry = np.empty_like(words)
    carry[0] = first
    np.right_shift(words[:-1], 63, out=carry[1:])
    return (words << 1) | carry


def _last_bit(words: Any, n: int) -> bool:
    """Bit n-1 of the packed mask."""
    return bool((int(words[(n - 1) >> 6]) >> ((n - 1) & 63)) & 1)


def count_rows(data: bytes, chunk: int = 8 << 20) -> int:
    """Rows of a whole CSV text (tests, small files)."""
    counter = RowCounter()
    for start in range(0, len(data), chunk):
        counter.feed(data[start:start + chunk])
    return counter.rows()
