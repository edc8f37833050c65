"""The transform runner's per-file fast paths give what the slow ones gave: the output's
bytes, partition values, the read's call site (`training.derive_run`, `data.gate`)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from buildenv.data.gate import partitioned_read
from buildenv.env.spec import Column
from buildenv.training import context
from buildenv.training.derive_run import _write


def test_an_output_written_through_a_file_handle_has_the_bytes_a_path_write_gives(tmp_path):
    frame = pd.DataFrame({"kind": ["a", "b", None], "n": [3, 1, 2], "mean_x": [0.5, -1.0, 2.0]})
    table = pa.Table.from_pandas(frame, preserve_index=False)  # with pandas' metadata
    _write(table, tmp_path / "new" / "0.parquet")
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "by-path.parquet",
                   compression="zstd", row_group_size=1 << 20)  # how outputs were written
    assert (tmp_path / "new" / "0.parquet").read_bytes() == \
        (tmp_path / "by-path.parquet").read_bytes()
    assert not list((tmp_path / "new").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("text,dtype", [("7", "int64"), ("2026-09-01", "date"), (None, "int64"),
                                        ("2026-09-01T10:00:00+02:00", "timestamp"),
                                        ("x", "string"), ("true", "bool")])
def test_a_remembered_partition_value_equals_a_fresh_conversion(text, dtype):
    column = Column.model_validate({"dtype": dtype})
    first = partitioned_read.partition_scalar(text, column)
    partitioned_read.typed_partition_value.cache_clear()
    fresh = partitioned_read.partition_scalar(text, column)
    assert first.equals(fresh) and first.type == fresh.type
    assert partitioned_read.partition_scalar(text, column) is fresh  # remembered


def test_a_partition_value_that_does_not_convert_is_refused_every_time():
    column = Column.model_validate({"dtype": "int64"})
    for _ in range(2):
        with pytest.raises(ValueError, match="'seven' is not a int64"):
            partitioned_read.partition_scalar("seven", column)


def test_the_read_site_is_the_users_file_and_line_however_often_it_reads(tmp_path):
    user = tmp_path / "transform.py"
    user.write_text("import sys\n\ndef where(site):\n    return site(sys.modules['pathlib'])\n")
    namespace: dict = {}
    exec(compile(user.read_text(), str(user), "exec"), namespace)

    def site(_):
        return context._caller_site(tmp_path)  # as ctx.read calls it: two frames down

    def read():
        return namespace["where"](site)

    assert read() == read() == "transform.py:4"
    assert context._own_code(context.__file__, tmp_path) is None  # buildenv's own code
    assert context._own_code(str(tmp_path / "missing.py"), tmp_path) is None


@pytest.mark.parametrize("rows,shape", [(3, "small"), (200_000, "large"), (3, "no footer"),
                                        (0, "empty")])
def test_an_outputs_digest_read_at_once_is_the_lock_digest(tmp_path, monkeypatch, rows, shape):
    """`DerivedStore.put` hashes a small output in one read, without the footer thread;
    the record is `compute_digest`'s, and a large or odd file takes `compute_digest` itself."""
    from buildenv.data.lock import derived
    from buildenv.data.lock.digests import compute_digest
    from buildenv.data.storage import Location

    path = tmp_path / "0.parquet"
    rng = __import__("numpy").random.default_rng(0)
    pq.write_table(pa.table({"x": rng.normal(size=rows), "k": rng.integers(0, 9, rows)}), path)
    if shape == "no footer":  # a trailing byte: not Parquet any more (pyarrow says so)
        path.write_bytes(path.read_bytes()[:-4] + b"PAR2")
    if shape == "large":
        monkeypatch.setattr(derived, "SMALL_OUTPUT", 1024)
    slow: list[object] = []
    compute = derived.compute_digest
    monkeypatch.setattr(derived, "compute_digest", lambda *a: slow.append(a) or compute(*a))
    try:
        expected = compute_digest(Location(str(path), str(path), str(path), path), "parquet",
                                  "sha256")
    except Exception as exc:  # the same failure either way
        with pytest.raises(type(exc)):
            derived.output_digest(path)
        assert slow
        return
    assert derived.output_digest(path) == expected
    assert expected.rows == rows
    assert bool(slow) == (shape == "large")
