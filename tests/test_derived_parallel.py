"""A derived dataset built by several sandboxed processes at once (docs/derived.md "Several
processes"): the same lock and bytes as one process, the failure one process would report,
nothing stored or left running when it fails or is killed, and a transform drawing random
numbers gives a file the same bytes built alone or among others.

The threshold of files per process (`derive_claims.MIN_FILES`) is lowered to 1 here, and the
transform sleeps, so that the repository's 8 files are shared by two processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, invoke_cli
from partitioned_repo import age, file_path, write_file
from sourcerepo import source_fixtures
from test_derived_faults import assert_nothing_partial, processes_in, temp_left
from test_early_runner import _gone, _runners

from buildenv.compile import derive_claims, early_runner, start_recipe

_progress, template, locked = source_fixtures("derived-parallel")

TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                               reason="this process may use one core only")

RANDOM = '''\
import time

import numpy as np


def daily(ctx):
    if ctx.file in FAIL:
        time.sleep(0.3)
        raise ValueError("bad file " + ctx.file)
    time.sleep(SLEEP)
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    out["mean_x"] = out["mean_x"] + np.random.random(len(out))
    return out.sort_values("kind").reset_index(drop=True)


FAIL = set()
SLEEP = 0.15
'''


@pytest.fixture
def split(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file may get a process of its own, on an idle machine; the processes each file
    was handed to."""
    monkeypatch.setattr(derive_claims, "MIN_FILES", 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    owners: list[int] = []
    take = derive_claims.Claims.take

    def spied(self: derive_claims.Claims, process: int) -> int | None:
        index = take(self, process)
        if index is not None:
            owners.append(process)
        return index

    monkeypatch.setattr(derive_claims.Claims, "take", spied)
    return owners


def transform(root: Path, fail: tuple[str, ...] = (), sleep: float = 0.15) -> None:
    (root / "transforms" / "daily.py").write_text(
        RANDOM.replace("FAIL = set()", f"FAIL = {set(fail) or 'set()'}")
        .replace("SLEEP = 0.15", f"SLEEP = {sleep}"))


def set_processes(root: Path, n: int) -> None:
    env = root / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace(
        "      inputs: [events]\n", f"      inputs: [events]\n      processes: {n}\n"))


def daily_entry(root: Path) -> dict:
    return json.loads((root / "environments" / "ev.lock.json").read_text())["datasets"]["daily"]


def outputs(root: Path) -> dict[str, bytes]:
    out = root / ".buildenv" / "derived" / "ev" / "daily"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def forget_objects(root: Path) -> None:
    """Drop every stored output: the next lock builds every file again."""
    objects = root / ".buildenv" / "derived" / "objects"
    for path in sorted(objects.rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            path.chmod(0o600)
            path.unlink()


def test_processes_follow_the_files_the_cap_the_cores_and_the_load(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    many = 10 * derive_claims.MIN_FILES
    assert derive_claims.processes_for(1, None) == 1
    assert derive_claims.processes_for(derive_claims.MIN_FILES * 2 - 1, None) == 1
    assert derive_claims.processes_for(derive_claims.MIN_FILES * 2, None) == 2
    assert derive_claims.processes_for(many, None) == 4
    assert derive_claims.processes_for(many, 1) == 1
    assert derive_claims.processes_for(many, 3) == 3
    # a core less per whole unit of load beyond one
    assert derive_claims.processes_for(many, None, load=1.9) == 4
    assert derive_claims.processes_for(many, None, load=2.2) == 3
    assert derive_claims.processes_for(many, None, load=3.6) == 2
    assert derive_claims.processes_for(many, None, load=4.0) == 1
    assert derive_claims.processes_for(many, None, load=9.0) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert derive_claims.processes_for(many, 8) == 1


def test_processes_below_one_is_refused(locked):
    set_processes(locked, 0)
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 2 and "processes" in err, out + err


@TWO_CORES
def test_several_processes_give_the_lock_and_bytes_of_one(locked, split):
    transform(locked)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert set(split) == {0, 1} and len(split) == 8  # both built files, each file once
    parallel, parallel_bytes = daily_entry(locked), outputs(locked)
    forget_objects(locked)
    set_processes(locked, 1)
    split.clear()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert "derive daily (8 of 8 files)" in err and split == []  # one process, no claims
    assert daily_entry(locked) == parallel
    assert outputs(locked) == parallel_bytes
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


@pytest.fixture
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Start recipes in a cache of the test's own; no process started early left after it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("BUILDENV_NO_PREFETCH", raising=False)
    early_runner.outcomes.clear()
    yield
    early_runner.discard()
    early_runner.outcomes.clear()


def started_early(root: Path) -> list[int]:
    """What `buildenv lock ev` starts from the recipe in its first milliseconds (pids)."""
    assert start_recipe.begin(root, ["ev"])
    return [s.proc.pid for s in start_recipe.pending]


@TWO_CORES
def test_a_full_rebuild_adopts_the_processes_started_from_the_recipe(locked, split, recipes,
                                                                      monkeypatch):
    transform(locked, sleep=0.05)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0  # keeps the recipe: 8 files
    transform(locked, sleep=0.1)  # the module changed: every file is stale
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert len(started_early(locked)) == 1  # a busy machine: one process, as the build's
    early_runner.discard()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    early_runner.outcomes.clear()
    pids = started_early(locked)
    assert len(pids) == 2
    split.clear()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (8 of 8 files)" in err, err
    assert early_runner.outcomes == ["adopted", "adopted"] and set(split) == {0, 1}
    assert all(_gone(pid) for pid in pids) and not _runners(locked)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0

    # one input file changed: one process, started early and adopted; none speculative
    write_file(locked, 1, 1, seed=4242)
    age(locked)
    early_runner.outcomes.clear()
    pids = started_early(locked)
    assert len(pids) == 1
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (1 of 8 files)" in err, err
    assert early_runner.outcomes == ["adopted"] and _gone(pids[0]) and not _runners(locked)


@TWO_CORES
def test_processes_started_early_that_the_build_does_not_use_are_killed(locked, split,
                                                                         recipes, monkeypatch):
    transform(locked, sleep=0.05)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    transform(locked, sleep=0.1)
    pids = started_early(locked)
    assert len(pids) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))  # busy by the build
    split.clear()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (8 of 8 files)" in err, err
    assert early_runner.outcomes == ["adopted", "discarded"] and split == []
    assert all(_gone(pid) for pid in pids) and not _runners(locked)


@TWO_CORES
def test_processes_started_from_a_recipe_that_no_longer_matches_are_closed(locked, split,
                                                                         recipes):
    transform(locked, sleep=0.05)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    transform(locked, sleep=0.1)
    path = start_recipe.recipe_path(locked)
    recipe = json.loads(path.read_text())
    recipe["entries"][0]["env"]["LANG"] = "xx_XX.planted"
    path.write_text(json.dumps(recipe))
    pids = started_early(locked)
    assert len(pids) == 2
    split.clear()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (8 of 8 files)" in err, err
    # neither was used: the build started its own two, in the sandbox it computes
    assert early_runner.outcomes == ["restarted", "restarted"] and set(split) == {0, 1}
    assert all(_gone(pid) for pid in pids) and not _runners(locked)
    assert "xx_XX.planted" not in path.read_text()


def test_a_file_drawing_random_numbers_has_the_same_bytes_built_alone(locked):
    transform(locked, sleep=0)
    set_processes(locked, 1)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    rel = str(file_path(locked, 1, 1).relative_to(locked / "data" / "events"))
    full = outputs(locked)
    objects = locked / ".buildenv" / "derived" / "objects"
    stored = [p for p in objects.rglob("*.parquet") if p.read_bytes() == full[rel]]
    assert len(stored) == 1
    for path in (stored[0], stored[0].with_suffix(".json")):
        if path.exists():
            path.unlink()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and "derive daily (1 of 8 files)" in err, err
    assert outputs(locked)[rel] == full[rel]


@TWO_CORES
def test_the_failure_reported_is_the_first_in_order_and_nothing_is_stored(locked, split):
    files = [str(file_path(locked, d, p).relative_to(locked / "data" / "events"))
             for d in range(4) for p in range(2)]
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    objects = locked / ".buildenv" / "derived" / "objects"
    stored = sorted(p for p in objects.rglob("*") if p.is_file())
    transform(locked, fail=(files[3], files[5], files[7]))
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE340" in err, out + err
    errors = [line for line in err.splitlines() if "error[" in line]
    assert len(errors) == 1 and f"bad file {files[3]} (input file {files[3]})" in errors[0], err
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    assert sorted(p for p in objects.rglob("*") if p.is_file()) == stored
    assert 0 < len(split) < 8 or set(split) == {0, 1}  # handing out stopped, or both failed


PATCHED = ("import os, sys, runpy\nimport buildenv.compile.derive_claims as claims\n"
           "claims.MIN_FILES = 1\nos.getloadavg = lambda: (0.0, 0.0, 0.0)\n"
           "sys.argv = ['buildenv', *sys.argv[1:]]\n"
           "runpy.run_module('buildenv', run_name='__main__', alter_sys=True)\n")


def start(root: Path, *args: str) -> subprocess.Popen:
    """`buildenv ARGS` in a process of its own, with a process per file allowed."""
    tmp = root.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_ROOT", None)
    return subprocess.Popen([sys.executable, "-c", PATCHED, *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@TWO_CORES
@pytest.mark.slow
def test_a_lock_killed_while_several_processes_run_leaves_nothing(locked):
    rng = random.Random(20261207)
    for i in range(3):
        transform(locked, sleep=0.1 + i / 1000)  # other code: every file is stale
        proc = start(locked, "lock", "ev")
        time.sleep(rng.uniform(0.8, 1.4))  # the transform runs in both processes
        proc.send_signal(signal.SIGINT if i == 0 else signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while processes_in(locked) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_in(locked) == [], "a sources runner outlived its build"
        assert_nothing_partial(locked)
    proc = start(locked, "lock", "ev")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert_nothing_partial(locked)
    assert temp_left(locked) == []
    assert len(pq.read_table(locked / ".buildenv" / "derived" / "ev" / "daily")) > 0


@TWO_CORES
def test_a_link_in_place_of_either_processes_output_directory_is_not_followed(locked, split,
                                                                               tmp_path):
    """h81's `_claim`: each process's outputs are taken from the directory the build made for
    it and holds open; the process that builds the last file swaps its own for a link."""
    from test_derive_hostile import SWAP

    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(8):
        pq.write_table(pa.table({"kind": ["SECRET"], "n": [1], "mean_x": [float(i)]}),
                       outside / f"{i}.parquet")
    before = sorted(p.name for p in outside.iterdir())
    (locked / "transforms" / "daily.py").write_text(SWAP.format(outside=str(outside)).replace(
        "def daily(ctx):\n", "def daily(ctx):\n    __import__('time').sleep(0.15)\n"))
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert set(split) == {0, 1}, err
    assert sorted(p.name for p in outside.iterdir()) == before
    objects = locked / ".buildenv" / "derived" / "objects"
    assert code == 0 and not [p for p in objects.rglob("*.parquet")
                              if "SECRET" in str(pq.read_table(p).to_pydict())], err
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def test_a_time_limit_stops_every_process(locked, split):
    transform(locked, sleep=600)
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace(
        "      inputs: [events]\n", "      inputs: [events]\n      timeout: 3\n"))
    before = (locked / "environments" / "ev.lock.json").read_bytes()
    started = time.monotonic()
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE344" in err and "time limit of 3 s" in err, out + err
    assert time.monotonic() - started < 60
    assert (locked / "environments" / "ev.lock.json").read_bytes() == before
    deadline = time.monotonic() + 10
    while processes_in(locked) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(locked) == []


SENTINEL = "SENTINEL-5e1d@people.example"

PEOPLE = """\
  people:
    uri: data/people.parquet
    columns:
      kind: {dtype: string, nullable: false}
      name: {dtype: string, nullable: false, serving: false}
"""

READS_PEOPLE = '''\
import time


def daily(ctx):
    time.sleep(0.15)
    people = ctx.read("people", columns=["kind", "name"])
    if ctx.file in FAIL:
        raise ValueError("bad name " + people["name"].iloc[0])
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)


FAIL = set()
'''


def restricted_second_input(root: Path, fail: set[str]) -> None:
    """`daily` also reads `people` (restricted, one file, a sentinel in `name`)."""
    env = root / "environments" / "ev.yaml"
    text = env.read_text().replace("      inputs: [events]\n", "      inputs: [events, people]\n")
    text = text.replace("datasets:\n", "datasets:\n" + PEOPLE, 1)
    env.write_text(text + "privacy:\n  restricted: [people]\n")
    pq.write_table(pa.table({"kind": ["a", "b"], "name": [SENTINEL, "someone"]}),
                   root / "data" / "people.parquet")
    age(root)
    (root / "transforms" / "daily.py").write_text(
        READS_PEOPLE.replace("FAIL = set()", f"FAIL = {fail or 'set()'}"))


def audited(root: Path) -> list[tuple[str, str, int]]:
    log = root / ".buildenv" / "audit" / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return sorted((r["dataset"], r["purpose"], r["rows"]) for r in records)


@TWO_CORES
def test_restricted_inputs_are_audited_and_quoted_by_no_process_as_by_one(locked, split):
    restricted_second_input(locked, set())
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and set(split) == {0, 1}, err
    parallel = audited(locked)
    assert len([r for r in parallel if r[0] == "people"]) == 8  # one read per file
    assert json.loads((locked / "environments" / "ev.lock.json").read_text())
    forget_objects(locked)
    shutil.rmtree(locked / ".buildenv" / "audit")
    set_processes(locked, 1)
    assert invoke_cli(["lock", "ev"], locked)[0] == 0
    assert audited(locked) == parallel
    files = [str(file_path(locked, d, p).relative_to(locked / "data" / "events"))
             for d in range(4) for p in range(2)]
    fail = {files[2], files[6]}
    forget_objects(locked)
    (locked / "transforms" / "daily.py").write_text(READS_PEOPLE.replace(
        "FAIL = set()", f"FAIL = {fail}"))
    env = locked / "environments" / "ev.yaml"
    env.write_text(env.read_text().replace("      processes: 1\n", ""))
    code, out, err = invoke_cli(["lock", "ev"], locked)
    assert code == 1 and "BE340" in err and "message withheld" in err, out + err
    assert files[2] in next(line for line in err.splitlines() if "error[" in line)
    assert SENTINEL not in out + err
    for folder in (locked / ".buildenv" / "derived", locked / ".buildenv" / "audit",
                   locked / "environments"):
        for path in folder.rglob("*"):
            assert not path.is_file() or SENTINEL.encode() not in path.read_bytes(), path
