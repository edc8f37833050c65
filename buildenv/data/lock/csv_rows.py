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
with more is counted in eighths, each the same way, and byte by byte (the state machine, which
is the reference) only below `_SMALL`.

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
_BLOCK = 1 << 19  # bytes counted at a time: the byte mask and its words stay in the L2 cache
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
        self._words: _Words | None = None  # a span's masks, reused

    def feed(self, chunk: bytes | bytearray | memoryview, start: int = 0,
             stop: int | None = None) -> None:
        """Count the records ending in `chunk[start:stop]` (not kept: a reused buffer may be
        passed; a range of a buffer is counted in place, with no copy)."""
        data = bytes(chunk) if isinstance(chunk, memoryview) else chunk
        stop = len(data) if stop is None else min(stop, len(data))
        if self._head is not None:  # the first bytes: a UTF-8 BOM is not data
            take = max(min(3 - len(self._head), stop - start), 0)
            head = self._head + bytes(data[start:start + take])
            start += take
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return
            self._head = None
            if head != _BOM:
                self._count(head, 0, len(head))
        self._count(data, start, stop)

    def rows(self) -> int:
        if self._head:  # a file of one or two bytes that begin a BOM
            head, self._head = self._head, None
            self._count(head, 0, len(head))
        records = self.records + (1 if self.content else 0)
        return max(records - 1, 0)  # the first record is the header

    def _count(self, data: bytes | bytearray, start: int, stop: int) -> None:
        if stop - start < _SMALL:
            if start < stop:
                self._bytewise(data[start:stop])
            return
        if self._words is None or self._words.size < _BLOCK:
            self._words = _Words(_BLOCK)
        self._spans(data, start, stop, _BLOCK)

    def _spans(self, data: bytes | bytearray, start: int, stop: int, span: int) -> None:
        """Count `data[start:stop]` bit-parallel, `span` bytes at a time; a span with more
        literal quotes than are worth taking out one by one is counted in smaller spans, and
        below `_SMALL` byte by byte."""
        for begin in range(start, stop, span):
            end = min(begin + span, stop)
            if not self._bitwise(data, begin, end):
                if span > _SMALL:
                    self._spans(data, begin, end, max(span // 8, _SMALL))
                else:
                    self._bytewise(data[begin:end])

    # --- numpy, 64 bytes a word ---------------------------------------------------------------
    def _bitwise(self, data: bytes | bytearray, begin: int, end: int) -> bool:
        """Count the records of `data[begin:end]`; False (nothing changed) if it holds more
        literal quotes than are worth taking out one at a time."""
        import numpy as np

        w = self._words
        assert w is not None
        n = end - begin
        nw = (n + 63) >> 6
        has_cr = data.find(b"\r", begin, end) >= 0
        inside0 = self.state == _QUOTED
        quoted = inside0 or data.find(b'"', begin, end) >= 0
        a = np.frombuffer(data, dtype=np.uint8, count=n, offset=begin)
        term = lf = w.pack(a, _LF, w.lf)
        if has_cr:
            term = np.bitwise_or(lf, w.pack(a, _CR, w.cr), out=w.term[:nw])
        quotes: Any = None
        if quoted:
            quotes, comma = w.pack(a, _QUOTE, w.quotes), w.pack(a, _COMMA, w.comma)
            # every quote the parity model opens a field with must follow a field's end (a
            # comma, a terminator, the quote of a `""`, the block's start in such a state);
            # else it is a literal quote, data in an unquoted field
            field_end = np.bitwise_or(term, comma, out=comma)
            at_start = self.state in (_FIELD_START, _AFTER_CLOSE)
            for _ in range(_LITERALS + 1):
                inside, inside_end = w.inside(quotes, inside0)
                literal = w.literal(quotes, inside, field_end, at_start)
                if literal is None:
                    break
                quotes[literal >> 6] ^= np.uint64(1 << (literal & 63))  # data: out of the mask
            else:
                return False
            ends = np.bitwise_and(term, np.invert(inside, out=inside), out=inside)
        else:
            ends, inside_end = term, False
        # a terminator right after a terminator (or first, after one) ends no record
        follows = w.shifted(term, not self.content)
        records = np.bitwise_and(ends, np.invert(follows, out=follows), out=follows)
        self.records += int(np.bitwise_count(records, out=records).sum())
        last = data[end - 1]
        outside_term = not inside_end and last in (_LF, _CR)
        self.content = not outside_term
        self.prev_cr = outside_term and last == _CR
        if inside_end:
            self.state = _QUOTED
        elif last in (_LF, _CR, _COMMA):
            self.state = _FIELD_START
        elif last == _QUOTE and quotes is not None and _last_bit(quotes, n):
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


class _Words:
    """A block's bit masks, 64 bytes to a uint64 word (bit i of word k: byte 64k + i), and
    the scratch words of the steps that combine them, made once per counter: no step
    allocates, and a block's words stay in the cache."""

    def __init__(self, size: int) -> None:
        import numpy as np

        self.size = size
        words = (size + 63) >> 6
        self.lf, self.cr, self.quotes, self.comma, self.term, self.odd, self.tmp, \
            self.extra = np.zeros((8, words), dtype="<u8")
        self.flags = np.empty(words, dtype=bool)
        self.mask = np.empty(size, dtype=bool)
        self.one, self.top = np.uint64(1), np.uint64(63)
        self.prefix_shifts = [np.uint64(1 << i) for i in range(1, 6)]  # 2, 4, 8, 16, 32

    def pack(self, a: Any, byte: int, words: Any) -> Any:
        """Where the bytes `a` equal `byte`, as words (the last word's bits past the end 0)."""
        import numpy as np

        packed = np.packbits(np.equal(a, byte, out=self.mask[:len(a)]), bitorder="little")
        nw = (len(a) + 63) >> 6
        if len(packed) == nw * 8:
            return packed.view("<u8")
        view = words[:nw].view(np.uint8)
        view[:len(packed)] = packed
        view[len(packed):] = 0
        return words[:nw]

    def inside(self, quotes: Any, inside0: bool) -> tuple[Any, bool]:
        """Bit i set when an odd number of quotes, counting from a start `inside0`, lie up to
        and including byte i: the bytes of quoted fields with their opening quotes. And
        whether the span ends inside a quoted field."""
        import numpy as np

        nw = len(quotes)
        inside, step = self.odd[:nw], self.tmp[:nw]
        np.left_shift(quotes, self.one, out=inside)
        np.bitwise_xor(inside, quotes, out=inside)
        for shift in self.prefix_shifts:  # prefix XOR within each word, in place
            np.left_shift(inside, shift, out=step)
            np.bitwise_xor(inside, step, out=inside)
        # the parity after each word (its top bit), accumulated over the words (on booleans:
        # numpy's accumulate of integers is several times slower)
        odd = self.flags[:nw]
        np.less(inside.view(np.int64), 0, out=odd)
        np.logical_xor.accumulate(odd, out=odd)
        parity = bool(odd[-1])
        # the words after an odd count (with the start) flip entirely
        np.copyto(step[1:], odd[:-1])
        np.negative(step[1:], out=step[1:])
        np.bitwise_xor(inside[1:], step[1:], out=inside[1:])
        if inside0:
            np.invert(inside, out=inside)
        return inside, inside0 ^ parity

    def literal(self, quotes: Any, inside: Any, field_end: Any, at_start: bool) -> int | None:
        """The first quote that opens a field by the parity but does not follow a field's
        end (bit position in the span), or None."""
        import numpy as np

        nw = len(quotes)
        before = self.shifted(np.bitwise_or(field_end, quotes, out=self.extra[:nw]), at_start)
        bad = np.bitwise_and(quotes, inside, out=self.extra[:nw])
        np.bitwise_and(bad, np.invert(before, out=before), out=bad)
        if not np.count_nonzero(bad):
            return None
        word = int(np.flatnonzero(bad)[0])
        bits = int(bad[word])
        return (word << 6) + (bits & -bits).bit_length() - 1

    def shifted(self, words: Any, first: bool) -> Any:
        """Each bit moved to the next byte's place (bit i of the result: bit i-1 of the
        input), with `first` as the bit before the span. Written over the CR mask (free once
        the terminators are combined) and `tmp`."""
        import numpy as np

        nw = len(words)
        out, carry = self.cr[:nw], self.tmp[:nw]
        np.left_shift(words, self.one, out=out)
        np.right_shift(words[:-1], self.top, out=carry[1:])
        np.bitwise_or(out[1:], carry[1:], out=out[1:])
        if first:
            out[0] |= self.one
        return out


def _last_bit(words: Any, n: int) -> bool:
    """Bit n-1 of the packed mask."""
    return bool((int(words[(n - 1) >> 6]) >> ((n - 1) & 63)) & 1)


def count_rows(data: bytes, chunk: int = 8 << 20) -> int:
    """Rows of a whole CSV text (tests, small files)."""
    counter = RowCounter()
    for start in range(0, len(data), chunk):
        counter.feed(data[start:start + chunk])
    return counter.rows()
