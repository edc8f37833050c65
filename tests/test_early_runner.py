"""The transforms' process started early (`compile.early_runner`): `buildenv lock` starts it
before it knows the pins, adopts it only when the sandbox it computes is the one the process
was started with, gives the same bytes either way, and leaves no process behind -- after
success, failure, SIGTERM, a sandbox that differs, or nothing stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli
from partitioned_repo import age, file_path, write_file
from sourcerepo import source_fixtures

from buildenv.compile import early_runner

_progress, template, locked = source_fixtures("early")

# `buildenv lock` as users run it (`buildenv.cli.run`), reporting what became of the process
# started early and its pid (the exit handler registered first runs last)
DRIVER = """\
import atexit, json, sys
from buildenv.compile import early_runner
seen = {}
path, pid_path = sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else None
def report():
    with open(path, "w") as f:
        json.dump({"outcomes": early_runner.outcomes, "pid": seen.get("pid")}, f)
atexit.register(report)
orig = early_runner.begin
def begin(*a):
    orig(*a)
    seen["pid"] = early_runner.started_pid()
    if pid_path:
        open(pid_path, "w").write(str(seen["pid"]))
early_runner.begin = begin
sys.argv = ["buildenv", "lock", *sys.argv[2].split()]
from buildenv.cli import run
run()
"""


@pytest.fixture(autouse=True)
def _nothing_held():
    yield
    early_runner.discard()
    early_runner.outcomes.clear()


def _lock(root: Path, tmp_path: Path, args: str = "ev", pid_file: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    report = tmp_path / "report.json"
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("BUILDENV_ROOT", "BUILDENV_NO_PREFETCH")}
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    argv = [sys.executable, "-c", DRIVER, str(report), args]
    if pid_file is not None:
        argv.append(str(pid_file))
    return subprocess.Popen(argv, cwd=root, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True), report


def _runners(root: Path) -> list[int]:
    """Processes left running a transform for `root` (the runner or its bubblewrap)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"sources_runner" in cmdline and cwd == str(root.resolve()):
            found.append(int(entry.name))
    return found


def _gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _files(root: Path) -> dict[str, bytes]:
    out = root / ".buildenv/derived/ev/daily"
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    files["lock"] = (root / "environments/ev.lock.json").read_bytes()
    return files


def test_the_process_started_early_is_adopted_and_gives_the_same_bytes(template, tmp_path):
    import shutil

    early = Path(shutil.copytree(template, tmp_path / "early", symlinks=True))
    late = Path(shutil.copytree(template, tmp_path / "late", symlinks=True))
    for root in (early, late):
        write_file(root, 1, 1, seed=4242)
        age(root)
    early_runner.begin(str(early), ["ev"])
    pid = early_runner.started_pid()
    assert pid is not None
    code, _, err = invoke_cli(["lock", "ev"], early)
    assert code == 0, err
    assert early_runner.outcomes == ["adopted"]
    assert invoke_cli(["lock", "ev"], late)[0] == 0  # nothing started early
    assert early_runner.outcomes == ["adopted"]
    assert _files(early) == _files(late)
    assert _gone(pid) and not _runners(early)


def test_a_sandbox_that_differs_restarts_the_process(locked, monkeypatch):
    write_file(locked, 1, 1, seed=4243)
    age(locked)
    early_runner.begin(str(locked), ["ev"])
    pid = early_runner.started_pid()
    assert pid is not None
    # what the runner's environment keeps changed since it started: not the one to run
    monkeypatch.setenv("LANG", "C.UTF-8" if os.environ.get("LANG") != "C.UTF-8" else "C")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    assert early_runner.outcomes == ["restarted"]
    assert _gone(pid) and not _runners(locked)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


def _started_with_broker(root: Path, seed: int):
    """One input changed, and the runner started early for it (skips without a sandbox)."""
    write_file(root, 1, 1, seed=seed)
    age(root)
    early_runner.begin(str(root), ["ev"])
    held = early_runner._held[-1]
    if held.box._broker is None:
        pytest.skip("no sandbox on this machine: no broker")
    return held


def test_a_runner_that_asked_its_broker_before_its_request_is_not_adopted(locked):
    held = _started_with_broker(locked, 4244)
    import socket

    from buildenv.data.gate.broker import Broker

    # what an early `open` would look like from the runner's side of the socket
    broker: Broker = held.box._broker
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    broker._ours, old = ours, broker._ours
    theirs.send(b'{"op": "open", "key": "x"}')
    assert broker.asked()
    code, _, err = invoke_cli(["lock", "ev"], locked)
    old.close()
    theirs.close()
    assert code == 0, err
    assert early_runner.outcomes == ["restarted"]


@pytest.mark.parametrize("case", ["success", "failure", "nothing stale"])
def test_no_process_is_left_behind(locked, tmp_path, case):
    if case == "success":
        write_file(locked, 1, 1, seed=4245)
    elif case == "failure":
        transform = locked / "transforms/daily.py"
        transform.write_text(transform.read_text().replace(
            "    df = ctx.read", "    raise ValueError('boom')\n    df = ctx.read", 1))
    else:  # an input file written again with the same bytes: it looks changed, is not
        path = file_path(locked, 1, 1)
        path.write_bytes(path.read_bytes())
    age(locked)
    proc, report = _lock(locked, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert report.is_file(), err
    seen = json.loads(report.read_text())
    assert seen["pid"] is not None, err
    expected = {"success": ["adopted"], "failure": ["adopted"],
                "nothing stale": ["discarded"]}[case]
    assert seen["outcomes"] == expected, err
    assert (proc.returncode == 0) == (case != "failure"), err
    assert _gone(seen["pid"]) and not _runners(locked)


def test_sigterm_of_the_lock_leaves_no_process(locked, tmp_path):
    write_file(locked, 1, 1, seed=4246)
    transform = locked / "transforms/daily.py"
    transform.write_text("import time\n" + transform.read_text().replace(
        "    df = ctx.read", "    time.sleep(60)\n    df = ctx.read", 1))
    age(locked)
    pid_file = tmp_path / "pid"
    proc, _ = _lock(locked, tmp_path, pid_file=pid_file)
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while not (_gone(pid) and not _runners(locked)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid) and not _runners(locked)


def test_a_relock_of_unchanged_inputs_and_code_starts_nothing(locked, tmp_path):
    assert invoke_cli(["lock", "ev"], locked)[0] == 0  # the copy's files are new inodes
    proc, report = _lock(locked, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(report.read_text()) == {"outcomes": [], "pid": None}
    # the transform's code changed: it is started (and adopted: every file is rebuilt)
    transform = locked / "transforms/daily.py"
    transform.write_text(transform.read_text() + "\n# changed\n")
    proc, report = _lock(locked, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(report.read_text())["outcomes"] == ["adopted"], err


def test_a_build_whose_outputs_are_gone_starts_it_early(locked, tmp_path):
    import shutil

    assert invoke_cli(["lock", "ev"], locked)[0] == 0  # the copy's files are new inodes
    shutil.rmtree(locked / ".buildenv")  # outputs, stat cache and all: nothing else changed
    os.utime(locked / "environments/ev.lock.json")  # the lock is newer than every input
    proc, report = _lock(locked, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(report.read_text())["outcomes"] == ["adopted"], err


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children += [int(entry.name), *_descendants(int(entry.name))]
        except OSError:
            continue
    return children


def test_the_runner_asks_its_broker_nothing_before_its_request(locked):
    held = _started_with_broker(locked, 4247)
    deadline = time.monotonic() + 120
    waiting = False
    while not waiting and time.monotonic() < deadline:  # imports done, reading its request
        for pid in [held.proc.pid, *_descendants(held.proc.pid)]:
            try:
                runner = b"sources_runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
                waiting = runner and "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                continue
            if waiting:
                break
        time.sleep(0.05)
    assert waiting
    assert not held.box._broker.asked()
