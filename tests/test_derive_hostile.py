"""What a hostile transform can do to the build around its outputs, and cannot: hang it
through a crafted Parquet footer (parsed outside the sandbox, with no time limit), make it
follow a link left in place of its output directory (the build would move the files of a
directory the sandbox hides into the store), or make the build's report reader hold what it
floods the report pipe with. Each test fails on the tree before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, invoke_cli
from partitioned_repo import DAYS, FILES_PER_DAY
from sourcerepo import source_fixtures

from buildenv.compile import derive_reports

FILES = DAYS * FILES_PER_DAY

_progress, template, locked = source_fixtures("derive-hostile")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# FileMetaData whose field 1 is a LIST (compact: delta 1, type 9) of 2**62 booleans; and one
# whose field 1 is a MAP (type 11) of 2**62 bool->bool entries. 15 bytes of footer each.
LIST_OF_BOOLS = bytes([0x19, 0xF1]) + _varint(2 ** 62) + b"\x00"
MAP_OF_BOOLS = bytes([0x1B]) + _varint(2 ** 62) + bytes([0x11]) + b"\x00"


def _crafted(footer: bytes) -> bytes:
    return b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def _run(code: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s (killed)")


@pytest.mark.parametrize("footer", [LIST_OF_BOOLS, MAP_OF_BOOLS], ids=["list", "map"])
def test_the_footer_parser_ends_on_a_crafted_footer(footer):
    """A transform's output (<= 1 MiB) is parsed by `parquet_footer` in the build, outside the
    sandbox and without any time limit: a 31-byte file must not keep it busy for ever."""
    code = textwrap.dedent(f"""
        from buildenv.data.lock.parquet_footer import footer_rows
        data = {_crafted(footer)!r}
        print(footer_rows(lambda o, n: data[o:o + n], len(data)))
    """)
    proc = _run(code, 20)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr


def test_a_reported_output_cannot_hang_the_builds_stop(tmp_path):
    """The runner (user code) reports output 0, whose bytes it chose: `Reports.stop` (called
    once the runner has exited) must come back."""
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from types import SimpleNamespace
        from buildenv.compile import derive_reports
        from buildenv.data.lock.derived import DerivedStore
        tmp = Path({str(tmp_path)!r})
        out = tmp / "out"
        out.mkdir()
        store = DerivedStore(SimpleNamespace(data_state_dir=tmp / "state"))
        reports = derive_reports.Reports.start(out, ["sha256:" + "0" * 64], store)
        (out / "0.parquet").write_bytes({_crafted(LIST_OF_BOOLS)!r})
        fd = os.open(reports.fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"0 0\\n")
        os.close(fd)
        time.sleep(0.5)
        started = time.monotonic()
        reports.stop()
        print("stopped", round(time.monotonic() - started, 2))
    """)
    proc = _run(code, 30)
    assert proc.returncode == 0 and "stopped" in proc.stdout, proc.stderr


# The transform: at import, unlinks the report pipe (so no output is copied while it runs:
# the same as outputs over 1 MiB); once the runner has written the last output, it swaps its
# output directory for a link to a directory of its choice. Checking each output's path by
# `lstat` (session 10's first fix) followed that link: `put` then hashed, chmodded and *moved*
# the files of that directory. `derive._claim` takes outputs through the directory handle.
SWAP = '''\
import os
import sys

import pandas as pd

OUTSIDE = {outside!r}


def _job():
    frame = sys._getframe()
    while frame is not None:
        job = frame.f_locals.get("job")
        if isinstance(job, dict) and "files" in job:
            return job
        frame = frame.f_back
    return None


_JOB = _job()
if _JOB is not None and _JOB.get("reports"):
    os.unlink(_JOB["reports"])


def daily(ctx):
    frame = sys._getframe(1)  # derive_run._run_one
    job, item = frame.f_locals["job"], frame.f_locals["item"]
    if item["out"] == job["files"][-1]["out"]:
        from buildenv.training import derive_run

        real = derive_run._write
        out_dir = os.path.dirname(item["out"])

        def write(table, path):
            real(table, path)
            os.rename(out_dir, out_dir + ".moved")
            os.symlink(OUTSIDE, out_dir)

        derive_run._write = write
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)
'''


def test_a_link_in_place_of_the_output_directory_is_not_followed(locked, tmp_path):
    outside = tmp_path / "outside"  # stands for any directory the sandbox hides
    outside.mkdir()
    for i in range(FILES):
        pq.write_table(pa.table({"kind": ["SECRET"], "n": [1], "mean_x": [float(i)]}),
                       outside / f"{i}.parquet")
    before = sorted(p.name for p in outside.iterdir())
    (locked / "transforms" / "daily.py").write_text(SWAP.format(outside=str(outside)))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    after = sorted(p.name for p in outside.iterdir())
    objects = locked / ".buildenv" / "derived" / "objects"
    secret = [p for p in objects.rglob("*.parquet")
              if b"SECRET" in p.read_bytes() or "SECRET" in str(pq.read_table(p).to_pydict())]
    assert after == before, f"moved out of the outside dir: {set(before) - set(after)}; " \
        f"exit {code}; objects holding them: {len(secret)}\n{err[-2000:]}"
    # the build took the outputs from the directory it made and holds open, where the runner
    # wrote them: the lock is of the transform's real outputs, none of the outside files
    assert code == 0 and not secret, err
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


WRITER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ: a bigger pipe (unprivileged: up to 1 MiB)
except OSError:
    pass
buf = b"x" * (1 << 20)
for _ in range(int(sys.argv[2])):
    os.write(fd, buf)
"""


def test_the_reports_thread_holds_a_bounded_amount_of_what_the_runner_writes(tmp_path):
    """The runner can write to the report pipe as fast as it likes: what the build's thread
    holds at once should stay bounded (a line is at most a few bytes; `rest[-4096:]`)."""
    code = textwrap.dedent(f"""
        import subprocess, sys
        from pathlib import Path
        from types import SimpleNamespace
        from buildenv.compile import derive_reports
        from buildenv.data.lock.derived import DerivedStore
        sizes = []
        real = derive_reports.Reports._take_lines
        def take(self, data):
            sizes.append(len(data))
            return real(self, data)
        derive_reports.Reports._take_lines = take
        tmp = Path({str(tmp_path)!r})
        out = tmp / "out"
        out.mkdir()
        store = DerivedStore(SimpleNamespace(data_state_dir=tmp / "state"))
        reports = derive_reports.Reports.start(out, ["sha256:" + "0" * 64], store)
        subprocess.run([sys.executable, "-c", {WRITER!r}, str(reports.fifo), "48"],
                       check=True)
        reports.close()
        print("MAX", max(sizes), "CALLS", len(sizes))
    """)
    proc = _run(code, 120)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert int(words[1]) <= derive_reports.DRAIN + 4096, proc.stdout
