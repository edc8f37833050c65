"""A derived dataset's outputs are copied and hashed while the transform goes on
(`compile.derive_reports`): the first output is taken before the last file's transform ends,
and what a transform does to an output after naming it never reaches the store -- the stored
object is the bytes its digest and the lock were computed from. Reports the build cannot
trust (out of range, repeated, a link, a large or unreadable file) leave the output to the
old path, after the runner's exit."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli
from partitioned_repo import DAYS, FILES_PER_DAY, file_path
from sourcerepo import source_fixtures

from buildenv.compile import derive_reports
from buildenv.data.lock.derived import DerivedStore
from buildenv.data.lock.digests import compute_digest
from buildenv.data.storage import Location

FILES = DAYS * FILES_PER_DAY

_progress, template, locked = source_fixtures("derive-reports")

# Waits (in the runner, sandboxed) until the build has taken output `index`: `taken()` below
# leaves a marker beside the outputs once it has staged a copy. Without outputs taken while
# the runner runs, the marker never comes and the transform fails.
WAIT = '''
import os
import sys
import time


def _caller():
    frame = sys._getframe(2)  # derive_run._run_one, which called the transform
    return frame.f_locals["job"], frame.f_locals["item"]


def _wait_taken(out_dir, index):
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(out_dir, f"taken-{index}")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"output {index} was not taken while the transform ran")
        time.sleep(0.01)
'''


def _transform(root: Path, body: str) -> None:
    (root / "transforms" / "daily.py").write_text(
        "import mmap\n\nimport pandas as pd\n" + WAIT + "\n\ndef daily(ctx):\n"
        "    job, item = _caller()\n"
        "    out_dir = os.path.dirname(item['out'])\n"
        "    index = [f['out'] for f in job['files']].index(item['out'])\n"
        + body +
        "    df = ctx.read('events', columns=['kind', 'x'])\n"
        "    out = df.groupby('kind', as_index=False).agg(n=('x', 'size'), mean_x=('x', 'mean'))\n"
        "    return out.sort_values('kind').reset_index(drop=True)\n")


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The outputs the build staged, in order; each leaves `taken-<i>` for the transform."""
    order: list[int] = []
    real = derive_reports.Reports._take

    def take(self, index, withheld):  # type: ignore[no-untyped-def]
        staged = real(self, index, withheld)
        if staged is not None:
            order.append(index)
            (self.fifo.parent / f"taken-{index}").touch()
        return staged

    monkeypatch.setattr(derive_reports.Reports, "_take", take)
    return order


def expected_daily(root: Path, day: int, part: int) -> pd.DataFrame:
    df = pq.read_table(file_path(root, day, part), columns=["kind", "x"]).to_pandas()
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)


def _check_outputs(root: Path) -> None:
    """Every laid-out output holds what the transform computed, and its bytes hash to the
    lock's digest and to its object's record."""
    lock = json.loads((root / "environments" / "ev.lock.json").read_text())
    files = lock["datasets"]["daily"]["files"]
    assert len(files) == FILES
    out = root / ".buildenv" / "derived" / "ev" / "daily"
    objects = root / ".buildenv" / "derived" / "objects"
    records = {json.loads(p.read_text())["digest"]: p for p in objects.rglob("*.json")}
    for entry in files:
        data = (out / entry["path"]).read_bytes()
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert digest == entry["digest"], entry["path"]
        obj = records[digest].with_suffix(".parquet")
        assert obj.read_bytes() == data
        day = int(entry["path"].split("date=2026-09-0")[1][0]) - 1
        part = int(entry["path"].rsplit("part-", 1)[1].split(".")[0])
        got = pq.read_table(obj).to_pandas()[["kind", "n", "mean_x"]]
        pd.testing.assert_frame_equal(got, expected_daily(root, day, part),
                                      check_dtype=False)


def test_the_first_output_is_stored_before_the_last_transform_ends(locked, taken):
    # the last file's transform waits for the build to have taken the first output
    _transform(locked, "    if index == len(job['files']) - 1:\n"
                       "        _wait_taken(out_dir, 0)\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert taken and taken[0] == 0 and sorted(taken) == list(range(FILES))
    _check_outputs(locked)


def test_an_output_changed_after_it_was_named_is_stored_as_it_was_named(locked, taken):
    # each file's transform scribbles over the previous output, once the build has taken it,
    # through a shared mapping (no new change time): the store keeps the named bytes
    _transform(locked, "    if index > 0:\n"
                       "        _wait_taken(out_dir, index - 1)\n"
                       "        with open(os.path.join(out_dir, f'{index - 1}.parquet'), "
                       "'r+b') as fh:\n"
                       "            mem = mmap.mmap(fh.fileno(), 0)\n"
                       "            mem[4:len(mem) - 8] = bytes(len(mem) - 12)\n"
                       "            mem.close()\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    _check_outputs(locked)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_a_failing_transform_stores_nothing_it_had_named(locked, taken):
    objects = locked / ".buildenv" / "derived" / "objects"
    before = sorted(p.name for p in objects.rglob("*") if p.is_file())  # (directories may
    # be made ahead of their objects)
    _transform(locked, "    if index == len(job['files']) - 1:\n"
                       "        _wait_taken(out_dir, 0)\n"
                       "        raise ValueError('no good')\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE340" in err and "ValueError: no good" in err, err
    assert taken  # copies were made, and dropped with the failure
    assert sorted(p.name for p in objects.rglob("*") if p.is_file()) == before
    assert not list(locked.glob(".buildenv/**/.derive-stage.tmp-*"))  # the copies are gone


# --- the build's end, alone ---------------------------------------------------------------

def _parquet(path: Path, rows: int) -> bytes:
    pq.write_table(pa.table({"x": list(range(rows))}), path)
    return path.read_bytes()


def _reports(tmp_path: Path, count: int) -> tuple[derive_reports.Reports, Path, DerivedStore]:
    out = tmp_path / "out"
    out.mkdir()
    store = DerivedStore(SimpleNamespace(data_state_dir=tmp_path / "state"))  # type: ignore[arg-type]
    keys = [f"sha256:{i:02x}" + "0" * 62 for i in range(count)]
    reports = derive_reports.Reports.start(out, keys, store)
    assert reports is not None
    return reports, out, store


def _name(reports: derive_reports.Reports, *lines: str) -> None:
    fd = os.open(reports.fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, "".join(f"{line}\n" for line in lines).encode())
    finally:
        os.close(fd)


def test_only_trustworthy_reports_are_taken(tmp_path):
    reports, out, store = _reports(tmp_path, 6)
    try:
        good = _parquet(out / "0.parquet", 5)
        _parquet(out / "1.parquet", 3)
        (out / "2.parquet").symlink_to(out / "0.parquet")  # a link is not followed
        (out / "3.parquet").write_bytes(b"not parquet at all")
        pq.write_table(pa.table({"x": [os.urandom(derive_reports.SMALL_OUTPUT)]}),
                       out / "4.parquet", compression="none")  # over the bound: the old path
        _name(reports, "0 2", "0 9", "1 0", "2 0", "3 0", "4 0", "5 0", "6 0", "-1 0", "x y",
              "1")
        staged = reports.stop()
        assert sorted(staged) == [0, 1]
        copy = staged[0]
        assert copy.path.read_bytes() == good and copy.meta.withheld == 2
        name = str(out / "0.parquet")
        value = compute_digest(Location(name, name, name, Path(name)), "parquet", "sha256")
        assert (copy.meta.digest, copy.meta.size, copy.meta.rows) == \
            (value.digest, value.size, value.rows)
        # the runner's file changes after it was taken: the copy does not
        (out / "0.parquet").write_bytes(b"changed")
        meta = store.commit("sha256:" + "ab" * 32, copy, 2)
        stored = store.path("sha256:" + "ab" * 32)
        assert stored.read_bytes() == good and store.get("sha256:" + "ab" * 32) == meta
        assert stored.stat().st_mode & 0o777 == 0o444
        other = store.commit("sha256:" + "cd" * 32, staged[1], 7)  # the result's count wins
        assert other.withheld == 7 and store.get("sha256:" + "cd" * 32) == other
    finally:
        reports.close()
    assert not any((tmp_path / "state" / "tmp").iterdir())  # the copies' directory is gone


def test_a_record_is_read_once_per_build_and_an_edited_object_is_still_caught(tmp_path,
                                                                             monkeypatch):
    """The build asks the store for every file of the plan before the run and again to lay
    the dataset out after it: the second time, an object whose stat still matches what was
    read is not read and parsed again (100 records on a one-file rebuild's critical path).
    What the stat catches is caught as before: an object edited (even to the same size), or
    removed, in between is not the one recorded."""
    store = DerivedStore(SimpleNamespace(data_state_dir=tmp_path / "state"))  # type: ignore[arg-type]
    keys = [f"sha256:{i:02x}" + "0" * 62 for i in range(3)]
    for i, key in enumerate(keys):
        _parquet(tmp_path / f"{i}.parquet", 5 + i)
        meta = store.put(key, tmp_path / f"{i}.parquet", 0)
    fresh = DerivedStore(SimpleNamespace(data_state_dir=tmp_path / "state"))  # type: ignore[arg-type]
    metas = [fresh.get(key) for key in keys]
    assert metas[-1] == meta
    reads: list[Path] = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self)
                        or read_text(self, *a, **k))
    assert [fresh.get(key) for key in keys] == metas and reads == []
    # edited in place to other bytes of the same size (its mtime moves): hashed, refused
    edited = fresh.path(keys[0])
    edited.chmod(0o644)
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0xFF
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(metas[0].mtime_ns + 10**9,) * 2)  # an edit's mtime, tick or not
    assert edited.stat().st_size == metas[0].size
    assert fresh.get(keys[0]) is None and reads
    fresh.path(keys[1]).unlink()
    assert fresh.get(keys[1]) is None
    assert fresh.get(keys[2]) == metas[2]


def test_the_runner_never_waits_for_the_build(tmp_path):
    from buildenv.training.derive_run import _report, _reports

    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert _reports(str(fifo)) is None  # nobody reading: no reports, no wait
    assert _reports(None) is None
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fd = _reports(str(fifo))
        assert fd is not None
        for i in range(20000):  # far more than the pipe holds: lines are lost, never waited on
            _report(fd, i, 0)
        os.close(fd)
        assert os.read(reader, 16).startswith(b"0 0\n1 0\n")
    finally:
        os.close(reader)


# --- a link left in place of an output ----------------------------------------------------

LINK = '''\
    if index == 1:  # output 0 becomes a link to an input's raw file, which the sandbox hides
        os.remove(job['files'][0]['out'])
        os.symlink({secret!r}, job['files'][0]['out'])
'''


@pytest.mark.parametrize("overlap", [False, True])
def test_a_link_left_in_place_of_an_output_is_refused_not_followed(locked, monkeypatch, overlap):
    """A transform can replace an output it wrote by a link to a file its sandbox hides; the
    build (outside the sandbox) must neither hash what the link names nor store the link.
    Without the overlap (the path every output not copied while the runner ran takes): BE322,
    nothing stored. With it, output 0 may have been copied first: then the copy is stored."""
    if not overlap:
        monkeypatch.setattr(derive_reports.Reports, "start", lambda *a, **k: None)
    secret = str(sorted((locked / "data" / "events").rglob("*.parquet"))[0])
    _transform(locked, LINK.format(secret=secret))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    objects = locked / ".buildenv" / "derived" / "objects"
    assert not [p for p in objects.rglob("*") if p.is_symlink()]
    if code == 0:
        assert overlap  # output 0 was copied before the link replaced it
        _check_outputs(locked)
    else:
        assert code == 1 and "BE322" in err and "a link" in err, err
