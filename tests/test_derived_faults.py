"""Fault suite, data and labels made by code: `buildenv lock` processes racing on one
repository (sharing `.buildenv/derived`), and `buildenv lock` killed at random points of a
rebuild. Nothing partial is ever left: the lock file parses, every stored output is a complete
Parquet file with its record, the dataset's directory is whole, and the next run completes
with the outputs the transform computes.

Everything runs as separate `python -m buildenv` processes, the way parallel CI jobs share a
checkout and its `.buildenv/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from partitioned_repo import DAYS, FILES_PER_DAY, file_path
from sourcerepo import source_fixtures
from test_faults import env_for

FILES = DAYS * FILES_PER_DAY

pytestmark = pytest.mark.slow

_progress, template, locked = source_fixtures("derived-faults")


def start(root: Path, *args: str) -> subprocess.Popen:
    """`buildenv ARGS` with a temp dir of its own (`tmp/` beside the repository): what a
    killed process leaves there is seen."""
    tmp = root.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "buildenv", *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for({"TMPDIR": str(tmp)}))


def run(root: Path, *args: str) -> tuple[int, str, str]:
    proc = start(root, *args)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def stale_code(root: Path, version: int) -> None:
    """Change the transform's code (not what it computes): every output file is stale."""
    path = root / "transforms" / "daily.py"
    text = path.read_text().split("\nVERSION = ")[0]
    path.write_text(f"{text}\nVERSION = {version}\n")


def expected_daily(root: Path, day: int, part: int) -> pd.DataFrame:
    df = pq.read_table(file_path(root, day, part), columns=["kind", "x"]).to_pandas()
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)


def assert_nothing_partial(root: Path) -> None:
    """The lock parses; every stored output is whole and recorded; the dataset's directory,
    when there, holds one complete file per input file."""
    json.loads((root / "environments" / "ev.lock.json").read_text())
    objects = root / ".buildenv" / "derived" / "objects"
    for path in objects.rglob("*.parquet") if objects.is_dir() else []:
        pq.read_metadata(path)  # raises on a truncated file
        record = path.with_suffix(".json")
        if record.exists():
            meta = json.loads(record.read_text())
            assert meta["size"] == path.stat().st_size or meta["inode"] != path.stat().st_ino
    out = root / ".buildenv" / "derived" / "ev" / "daily"
    if out.exists():
        files = sorted(p for p in out.rglob("*") if p.is_file())
        assert len(files) == FILES, files
        for path in files:
            pq.read_metadata(path)


def assert_built_right(root: Path) -> None:
    code, out, err = run(root, "lock", "ev", "--check")
    assert code == 0, out + err
    out_dir = root / ".buildenv" / "derived" / "ev" / "daily"
    for day in range(DAYS):
        for part in range(FILES_PER_DAY):
            rel = file_path(root, day, part).relative_to(root / "data" / "events")
            got = pq.read_table(out_dir / rel).to_pandas()[["kind", "n", "mean_x"]]
            pd.testing.assert_frame_equal(got, expected_daily(root, day, part),
                                          check_dtype=False)


def temp_left(root: Path) -> list[Path]:
    """Temp files and dirs in the repository's state, and anything in the processes' TMPDIR."""
    tmp = root.parent / "tmp"
    return [p for p in (root / ".buildenv").rglob("*") if ".tmp" in p.name] + (
        list(tmp.iterdir()) if tmp.is_dir() else [])


def processes_in(root: Path) -> list[int]:
    """Processes whose working directory is the repository (a sources runner left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == root:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_concurrent_locks_of_one_environment_build_one_correct_result(locked):
    stale_code(locked, 1)
    procs = [start(locked, "lock", "ev") for _ in range(3)]
    results = [(p.wait(600), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err
    assert_nothing_partial(locked)
    assert_built_right(locked)
    lock = json.loads((locked / "environments" / "ev.lock.json").read_text())
    assert lock["datasets"]["daily"]["derived"]["code"]["transforms/daily.py"]
    # one object per input file (the same keys whoever built them), nothing left aside
    objects = list((locked / ".buildenv" / "derived" / "objects").rglob("*.parquet"))
    assert len(objects) == 2 * FILES  # the template's and this code's
    assert temp_left(locked) == []


def test_a_lock_killed_at_random_points_of_a_rebuild_leaves_nothing_partial(locked):
    rng = random.Random(20261206)
    started = time.perf_counter()
    stale_code(locked, 100)
    code, out, err = run(locked, "lock", "ev")  # how long a full rebuild takes here
    assert code == 0, out + err
    took = time.perf_counter() - started
    before_lock = 0  # kills that landed before the new lock was written
    for i in range(4):
        stale_code(locked, i)
        proc = start(locked, "lock", "ev")
        time.sleep(rng.uniform(0.2, took))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        deadline = time.monotonic() + 10
        while processes_in(locked) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_in(locked) == [], "a sources runner outlived its build"
        assert_nothing_partial(locked)
        code_now = "sha256:" + hashlib.sha256(
            (locked / "transforms" / "daily.py").read_bytes()).hexdigest()
        pinned = json.loads((locked / "environments" / "ev.lock.json").read_text())
        before_lock += pinned["datasets"]["daily"]["derived"]["code"][
            "transforms/daily.py"] != code_now
        code, out, err = run(locked, "lock", "ev")
        assert code == 0, out + err
        assert_nothing_partial(locked)
        assert_built_right(locked)
        assert temp_left(locked) == []
    assert before_lock >= 1  # the kills interrupted rebuilds, not only finished ones


def _transform(root: Path, body: str, timeout: float | None = None) -> None:
    (root / "transforms" / "daily.py").write_text(
        "import os\nimport time\n\n\ndef daily(ctx):\n" + body)
    if timeout is not None:
        env = root / "environments" / "ev.yaml"
        env.write_text(env.read_text().replace(
            "      inputs: [events]\n", f"      inputs: [events]\n      timeout: {timeout}\n"))


def test_a_transform_past_its_time_limit_is_stopped_whole(locked):
    """BE344: the process and what it started are killed; the lock stays as it was."""
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    _transform(locked, "    import subprocess, sys\n"
               "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
               "    time.sleep(600)\n", timeout=3)
    code, out, err = run(locked, "lock", "ev")
    assert code == 1 and "BE344" in err and "time limit of 3 s" in err, out + err
    assert "datasets.daily.source.timeout" in err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    deadline = time.monotonic() + 10
    while processes_in(locked) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(locked) == []
    assert_nothing_partial(locked)
    assert temp_left(locked) == []


def test_a_transform_whose_process_dies_is_reported(locked):
    """BE345: a process that exits without a result (a crash in a library, os._exit)."""
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    _transform(locked, "    print('about to die', flush=True)\n    os._exit(7)\n")
    code, out, err = run(locked, "lock", "ev")
    assert code == 1 and "BE345" in err and "exited with code 7" in err, out + err
    assert "about to die" in err  # its last lines (no restricted data here)
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    assert_nothing_partial(locked)
    assert temp_left(locked) == []


def test_a_process_started_for_a_transform_the_static_check_refuses_is_stopped(locked):
    """The sources process starts before the static check; when the check refuses the
    transform (BE102, nothing run), the process goes and leaves nothing behind."""
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    marker = locked / "ran.txt"
    _transform(locked, f"    open({str(marker)!r}, 'w').close()\n"
               "    return ctx.read('events', columns=['no_such_column'])\n")
    code, out, err = run(locked, "lock", "ev")
    assert code == 1 and "BE102" in err and "no_such_column" in err, out + err
    assert not marker.exists()  # refused before it ran
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    assert processes_in(locked) == []
    assert temp_left(locked) == []


KILLED_AT_RECORD = """
import os, runpy, sys
real = os.replace
def replace(src, dst):  # killed in the instant between an object's record and its rename
    if str(dst).endswith(".json") and "/derived/objects/" in str(dst):
        os.kill(os.getpid(), 9)
    return real(src, dst)
os.replace = replace
sys.argv = ["buildenv", "lock", "ev"]
runpy.run_module("buildenv", run_name="__main__")
"""


def test_a_lock_killed_while_recording_an_output_leaves_no_temp_file(locked):
    """The CI failure of session 6, made deterministic: the record's temp file (or, for an
    output copied while the transform ran, the directory of the copies and their records)
    lives in the swept scratch directory, never among the objects, and the next lock removes
    it."""
    stale_code(locked, 7)
    tmp = locked.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_RECORD], cwd=locked,
                          capture_output=True, text=True, timeout=600,
                          env=env_for({"TMPDIR": str(tmp)}))
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    objects = locked / ".buildenv" / "derived" / "objects"
    assert [p for p in objects.rglob("*") if ".tmp" in p.name] == []
    assert temp_left(locked)  # the dead writer's temp file or copies
    _relock_removes_what_was_left(locked)


KILLED_AT_COPY = """
import os, runpy, sys
real, seen = os.fchmod, []
def fchmod(fd, mode):  # killed while copying the third output, the transform still running
    seen.append(fd)
    if len(seen) == 3:
        os.kill(os.getpid(), 9)
    return real(fd, mode)
os.fchmod = fchmod
sys.argv = ["buildenv", "lock", "ev"]
runpy.run_module("buildenv", run_name="__main__")
"""


def test_a_lock_killed_while_copying_an_output_leaves_nothing_among_the_objects(locked):
    """Outputs are copied while the transform runs (`compile.derive_reports`): a lock killed
    then has stored nothing of that run (copies are moved in only after the runner's exit),
    and the next lock removes the copies and builds every file."""
    objects = locked / ".buildenv" / "derived" / "objects"
    before = sorted(p.name for p in objects.rglob("*") if p.is_file())
    stale_code(locked, 9)
    tmp = locked.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_COPY], cwd=locked,
                          capture_output=True, text=True, timeout=600,
                          env=env_for({"TMPDIR": str(tmp)}))
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert sorted(p.name for p in objects.rglob("*") if p.is_file()) == before
    assert [p for p in temp_left(locked) if ".derive-stage.tmp-" in p.name]  # the copies
    _relock_removes_what_was_left(locked)


def _relock_removes_what_was_left(locked: Path) -> None:
    """The next lock completes, builds right, and leaves no temp file of the killed one."""
    code, out, err = run(locked, "lock", "ev")
    assert code == 0, out + err
    assert_nothing_partial(locked)
    assert_built_right(locked)
    assert temp_left(locked) == []


KILLED_AT_STATE = """
import os, runpy, sys
real, name = os.replace, sys.argv[1]
def replace(src, dst):  # killed in the instant between a state file's temp file and its rename
    if str(dst).endswith(".buildenv/" + name):
        os.kill(os.getpid(), 9)
    return real(src, dst)
os.replace = replace
sys.argv = ["buildenv", "lock", "ev"]
runpy.run_module("buildenv", run_name="__main__")
"""


@pytest.mark.parametrize("state_file", ["statcache.json", "lockplan.json"])
def test_a_lock_killed_while_writing_its_state_leaves_no_temp_file(locked, state_file):
    """A state file of `.buildenv/` (the digest cache, the lock plan) is written beside itself
    through a temp file: a lock killed before the rename leaves that temp file, which the next
    lock removes when it writes that state file again (its owner is gone)."""
    stale_code(locked, 8)
    tmp = locked.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_STATE, state_file], cwd=locked,
                          capture_output=True, text=True, timeout=600,
                          env=env_for({"TMPDIR": str(tmp)}))
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert temp_left(locked)  # the dead writer's temp file or copies
    _relock_removes_what_was_left(locked)
