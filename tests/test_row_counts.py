"""Row counts the lock records without decoding: CSV records counted beside the hash
(`csv_rows`), Parquet rows from the footer (`parquet_footer`), both equal to what the decoder
reads, for any chunking; and a Parquet lock does not import pyarrow."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from buildenv.data.lock import csv_rows
from buildenv.data.lock.csv_rows import _BOM, RowCounter, count_rows
from buildenv.data.lock.parquet_footer import footer_rows
from buildenv.data.storage import locate


def decoder_rows(data: bytes) -> int:
    reader = pacsv.open_csv(io.BytesIO(data),
                            read_options=pacsv.ReadOptions(use_threads=False),
                            parse_options=pacsv.ParseOptions(newlines_in_values=True),
                            convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    return sum(batch.num_rows for batch in reader)


def bytewise(data: bytes) -> int:
    """The reference state machine alone (after the byte-order mark, which is not data)."""
    counter = RowCounter()
    counter._bytewise(data.removeprefix(_BOM))
    return counter.rows()


plain = st.text(alphabet="ab1 .-", max_size=5)
quoted = st.builds(lambda s: '"' + s.replace('"', '""') + '"',
                   st.text(alphabet='ab,\n\r" ', max_size=6))


@st.composite
def csv_texts(draw) -> bytes:
    columns = draw(st.integers(1, 3))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [",".join(f"h{i}" for i in range(columns))]
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()) and draw(st.booleans()):
            lines.append("")  # an empty line: skipped by the decoder
        lines.append(",".join(draw(st.one_of(plain, quoted)) for _ in range(columns)))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    if draw(st.booleans()) and draw(st.booleans()):
        text = newline + text
    return text.encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_texts(), st.integers(1, 64))
def test_csv_records_match_the_decoder_in_any_chunking(data, chunk):
    try:
        expect = decoder_rows(data)
    except pa.ArrowInvalid:  # the decoder refuses a header-only text without a newline
        assume(False)
    assert bytewise(data) == expect
    assert count_rows(data, chunk) == expect
    assert count_rows(data) == expect


@pytest.mark.parametrize("text, rows", [
    ('a,b\nq"c,2\n3,4\n', 2),                 # a quote inside an unquoted field is literal
    ('a,b\n"x"y,2\n3,4\n', 2),                # text after a closing quote
    ('a,b\n1,"\n\n"\n', 1),                   # empty lines inside quotes are data
    ("\n\na,b\n1,2\n\n", 1),                  # leading and trailing empty lines
    ("a,b\r\n1,2\r\n3,4", 2),                 # CRLF, no final terminator
    ("a,b\n", 0), ("", 0),
])
def test_csv_edge_cases(text, rows):
    data = text.encode()
    assert decoder_rows(data) == rows if data else True
    for chunk in (1, 2, 3, 1 << 20):
        assert count_rows(data, chunk) == rows


def test_large_chunks_take_the_fast_paths_and_agree():
    rng = np.random.default_rng(3)
    body = "\n".join(f"{i},{v:.5f},x{i % 7}" for i, v in enumerate(rng.normal(size=50_000)))
    plain_data = ("id,v,s\n" + body + "\n").encode()
    quoted_data = ("id,v,s\n" + "\n".join(f'{i},"{v:.3f}","s\n{i}"' for i, v in
                                           enumerate(rng.normal(size=20_000))) + "\n").encode()
    for data in (plain_data, quoted_data):
        expect = decoder_rows(data)
        for chunk in (4096, 65_536, 1 << 22):
            assert count_rows(data, chunk) == expect


def test_quoted_text_with_commas_newlines_and_escapes_takes_the_bitwise_path(monkeypatch):
    """Free text as exports write it: commas, newlines and `""` inside quoted fields, empty
    quoted fields, a final record without a terminator; chunk sizes that split words, quotes
    and `""` pairs; LF and CRLF line ends. The bit-parallel path must agree with the decoder and
    serve every chunk."""
    rng = np.random.default_rng(7)
    words = np.array(["late", "gate,", "changed", "crew\n", 'said ""ok""', "", "a,b"])
    lines = ["id,who,comment,x"]
    for i in range(30_000):
        text = " ".join(words[rng.integers(0, len(words), rng.integers(0, 6))])
        lines.append(f'{i},"user {i % 97}","{text}",{rng.random():.4f}')
    data = "\n".join(lines).encode()
    crlf = data.replace(b"\n", b"\r\n")  # Windows line ends, inside quotes too
    expect = decoder_rows(data)
    assert decoder_rows(crlf) == expect
    refuse_large_bytewise(monkeypatch)
    for chunk in (4099, 65_536, 1 << 20, len(data)):
        assert count_rows(data, chunk) == expect
        assert count_rows(crlf, chunk) == expect


def refuse_large_bytewise(monkeypatch):
    """Make the byte-by-byte reference fail for anything but a small tail."""
    original = RowCounter._bytewise

    def small_only(self, data):
        assert len(data) < csv_rows._SMALL, "the byte-by-byte path ran on a large piece"
        original(self, data)

    monkeypatch.setattr(RowCounter, "_bytewise", small_only)


FIELDS = ["", "1", "abc", "x y", '""', '"a,b"', '"line\nbreak"', '"cr\r\nlf"', '"lone\rcr"',
          '"say ""hi"""', '""""', '"\n\n"', '","', '"a""\n""b"']
LITERAL = ['5\'10"', 'a"b', 'x""', '"q"z']  # a quote inside an unquoted field, or after a close


def generated_csv(rng: np.random.Generator, rows: int, literal_rate: float) -> bytes:
    """A seeded CSV with the edge cases the counter must agree with the decoder on."""
    newline = ["\n", "\r\n", "\r"][rng.integers(0, 3)]
    out = [_BOM.decode("utf-8")] if rng.random() < 0.3 else []
    header = '"id\nnumber","note",c' if rng.random() < 0.5 else "id,note,c"
    out.append(header + newline)
    for i in range(rows):
        if rng.random() < 0.03:
            out.append(newline)  # an empty line: the decoder skips it
        cells = [str(i)] + [LITERAL[rng.integers(0, len(LITERAL))] if rng.random() < literal_rate
                            else FIELDS[rng.integers(0, len(FIELDS))] for _ in range(2)]
        out.append(",".join(cells) + newline)
    text = "".join(out)
    if rng.random() < 0.5:
        text = text.rstrip("\r\n")  # a final record without a terminator
    if rng.random() < 0.1:
        text += newline + '1,x,"unterminated, to the end'  # an odd quote count at the end
    return text.encode()


def python_csv_rows(data: bytes) -> int:
    """Python's csv module on an RFC 4180 text: records, not counting empty lines."""
    text = data.decode("utf-8-sig")
    return max(sum(1 for record in csv.reader(io.StringIO(text, newline="")) if record) - 1, 0)


@pytest.mark.parametrize("seed", range(24))
def test_generated_files_match_the_decoder_at_every_chunk_boundary(seed, monkeypatch):
    """Seeded files of a few thousand records (BOM, CRLF, lone CR, quoted newlines and `""`,
    empty lines, no final terminator, an unterminated quote at the end; some with literal
    quotes), counted in small blocks and chunks of many sizes, so that boundaries fall inside
    quotes, between the two quotes of a `""` and between the CR and LF of a CRLF."""
    monkeypatch.setattr(csv_rows, "_BLOCK", [1000, 4096, 1 << 18, 64, 192][seed % 5])
    monkeypatch.setattr(csv_rows, "_SMALL", 256)
    rng = np.random.default_rng(seed)
    literal_rate = [0.0, 0.0, 0.001, 0.3][seed % 4]
    data = generated_csv(rng, int(rng.integers(200, 3000)), literal_rate)
    expect = decoder_rows(data)
    assert bytewise(data) == expect
    if literal_rate == 0 and b'unterminated' not in data:
        assert python_csv_rows(data) == expect
    chunks = [1, 2, 3, 7, 64, 255, 4097, 65_537, len(data)] + list(rng.integers(8, 9000, 4))
    for chunk in chunks:
        assert count_rows(data, int(chunk)) == expect, chunk
    # boundaries placed exactly where they are hardest: after every kind of tricky byte pair
    for pair in (b'""', b"\r\n", b',"', b'"\n'):
        at = data.find(pair, len(data) // 3)
        if at > 0:
            counter = RowCounter()
            for piece in (data[:at + 1], data[at + 1:]):
                counter.feed(piece)
            assert counter.rows() == expect, pair


@pytest.mark.parametrize("seed", range(6))
def test_ranges_of_a_buffer_are_counted_in_place(seed, monkeypatch):
    """`feed(buffer, start, stop)` counts only that range (as the lock's CSV pass feeds each
    hashed piece of a reused buffer): bytes around it, quotes and newlines, are not data;
    the ranges of one file agree with the decoder wherever they end, BOM included."""
    monkeypatch.setattr(csv_rows, "_BLOCK", [1000, 4096, 64][seed % 3])
    monkeypatch.setattr(csv_rows, "_SMALL", 256)
    rng = np.random.default_rng(100 + seed)
    body = generated_csv(rng, int(rng.integers(200, 2000)), [0.0, 0.001, 0.3][seed % 3])
    expect = decoder_rows(body)  # a BOM is not data
    data = _BOM + body if seed % 2 and not body.startswith(_BOM) else body
    noise = b'"\n"\r\n,"' * 50
    for piece in [1, 2, 5, 300, 4097, len(data)]:
        counter = RowCounter()
        for start in range(0, len(data), piece):
            part = data[start:start + piece]
            buffer = bytearray(noise[:len(noise) - seed] + part + noise)
            at = len(noise) - seed
            counter.feed(buffer, at, at + len(part))
        assert counter.rows() == expect, piece


def heights_file(rows: int, every: int) -> tuple[bytes, int]:
    """A CSV whose every `every`-th height holds a literal quote in an unquoted field
    (`5'10"`), and whose notes are quoted with a newline inside; its rows by the decoder."""
    lines = ["id,height,note"]
    for i in range(rows):
        height = "5'10\"" if i % every == 7 else "170"
        lines.append(f'{i},{height},"n {i}\nmore"')
    data = ("\n".join(lines) + "\n").encode()
    expect = decoder_rows(data)
    assert expect == rows
    return data, expect


def test_literal_quotes_are_taken_out_without_the_byte_by_byte_path(monkeypatch):
    """A few quotes inside unquoted fields (`5'10"`) per block: the block is recounted
    without them, bit-parallel, and agrees with the decoder."""
    data, expect = heights_file(20_000, every=2000)
    refuse_large_bytewise(monkeypatch)
    for chunk in (4099, 1 << 16, len(data)):
        assert count_rows(data, chunk) == expect


def test_a_block_with_many_literal_quotes_is_counted_in_smaller_blocks(monkeypatch):
    """More literal quotes in a block than are taken out one at a time: the block is counted
    in eighths (each with its own few), not byte by byte."""
    data, expect = heights_file(40_000, every=300)
    refuse_large_bytewise(monkeypatch)
    seen: list[int] = []
    original = RowCounter._bitwise

    def spans(self, data, begin, end):
        seen.append(end - begin)
        return original(self, data, begin, end)

    monkeypatch.setattr(RowCounter, "_bitwise", spans)
    for chunk in (1 << 16, len(data)):
        seen.clear()
        assert count_rows(data, chunk) == expect
    assert csv_rows._BLOCK // 8 in seen  # a whole block failed, its eighths did not


def test_a_bom_before_a_quoted_header_is_not_data():
    data = _BOM + b'"id\nnumber","note"\n1,"a\nb"\n2,c\n'
    assert decoder_rows(data) == 2
    for chunk in (1, 2, 3, 4, 1 << 20):
        assert count_rows(data, chunk) == 2
    assert count_rows(_BOM[:2]) == 0
    assert count_rows(_BOM) == 0


@pytest.mark.parametrize("rows, group", [(0, None), (1, None), (1000, 100), (123_457, 10_000)])
def test_footer_rows_equal_pyarrow(tmp_path, rows, group):
    table = pa.table({"a": np.arange(rows), "s": [str(i) for i in range(rows)],
                      "m": pa.array([{"k": i} for i in range(rows)]),
                      "b": pa.array([i % 2 == 0 for i in range(rows)])})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=group)
    data = path.read_bytes()
    assert footer_rows(lambda o, n: data[o:o + n], len(data)) == rows
    assert pq.ParquetFile(path).metadata.num_rows == rows


@pytest.mark.parametrize("data", [b"not parquet at all", b"PAR1" + b"\0" * 20 + b"PAR1",
                                  b"PAR1\x15\x00\x00\x00\x00PAR1"])
def test_footer_parser_declines_what_it_does_not_understand(data):
    assert footer_rows(lambda o, n: data[o:o + n], len(data)) is None


def test_a_truncated_footer_is_declined(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": np.arange(10)}), path)
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[-8:-4], "little")
    data[-8 - length: -8 - length + 6] = b"\xff" * 6  # corrupt the start of the metadata
    assert footer_rows(lambda o, n: bytes(data[o:o + n]), len(data)) is None


def test_locking_parquet_imports_no_pyarrow(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": np.arange(5000)}), path)
    code = ("import sys\n"
            "from buildenv.data.lock.digests import digest_location\n"
            "from buildenv.data.storage import locate\n"
            "class P: data_base = None\n"
            f"d = digest_location(locate('file://{path}', P()), 'parquet')\n"
            "assert d.rows == 5000, d\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyarrow', 'pandas', 'numpy', 'pydantic')))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "[]"


def test_lock_prefetch_is_used_only_when_the_file_is_unchanged(tmp_path, monkeypatch):
    """A digest started before the command resolved its environment is taken only if the
    file's stat is still the one it was hashed under."""
    from buildenv.data.lock import digests

    class P:
        data_base = tmp_path

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"a": np.arange(10)}), path)
    location = locate("a.parquet", P())  # type: ignore[arg-type]
    digests.prefetch(location, "parquet")
    first = digests.digest_location(location, "parquet")
    pq.write_table(pa.table({"a": np.arange(20)}), path)
    digests.prefetch(location, "parquet")
    thread = digests._PREFETCHED[(location.key, "sha256", "parquet")][0]
    thread.join()
    pq.write_table(pa.table({"a": np.arange(30)}), path)  # changed after the prefetch
    Path(path).touch()
    third = digests.digest_location(location, "parquet")
    assert (first.rows, third.rows) == (10, 30)
