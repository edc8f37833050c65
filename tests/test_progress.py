"""Progress (docs/progress.md): quiet by default in the library, a live view on a terminal,
status lines without control characters elsewhere, never in machine output; build timings."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli, write_repo

from buildenv.cli import progress_view
from buildenv.cli.progress_view import Lines, Live
from buildenv.compile.build import PHASES, BuildOutcome, phase_timings
from buildenv.compile.plan import render_matrix, slowest
from buildenv.core import progress

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but newline


class Batch:
    def __init__(self, rows: int) -> None:
        self.num_rows = rows


# --- the library: no renderer, nothing printed ------------------------------------------------

def test_without_a_renderer_tasks_time_phases_and_print_nothing(capsys):
    with progress.task("work", total=10, unit="rows") as item:
        assert progress.current() is item
        item.advance(4)
        progress.phase("one")
        time.sleep(0.02)
        progress.phase("two")
    assert progress.current() is None
    assert (item.completed, item.status) == (4, "done")
    assert list(item.timings) == ["one", "two"] and item.timings["one"] >= 0.02
    assert list(progress.batches([Batch(3), Batch(4)], "rows")) and capsys.readouterr() == ("", "")


def test_batches_end_their_task_however_the_loop_ends():
    seen = []

    class Spy(progress.Reporter):
        def finished(self, task):
            seen.append((task.label, task.completed, task.status))

    with progress.installed(Spy()):
        for _ in progress.batches([Batch(2), Batch(3)], "all"):
            pass
        for _ in progress.batches([Batch(2), Batch(3)], "early"):
            break

        def consumer_raises():
            for _ in progress.batches([Batch(2)], "consumer raised"):
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            consumer_raises()

        def unreadable():
            yield Batch(2)
            raise OSError("truncated file")

        with pytest.raises(OSError, match="truncated file"):
            for _ in progress.batches(unreadable(), "source raised"):
                pass
    assert seen == [("all", 5, "done"), ("early", 0, "stopped"), ("consumer raised", 0, "stopped"),
                    ("source raised", 2, "failed")]


def test_a_failing_block_marks_its_task_failed():
    with pytest.raises(KeyError), progress.task("x") as item:
        raise KeyError("boom")
    assert item.status == "failed" and item.ended is not None


# --- plain lines -------------------------------------------------------------------------------

def lines_of(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_lines_show_nothing_for_short_work():
    out = io.StringIO()
    with (progress.installed(Lines(out, after=1.0, ticking=False)) as lines,
          progress.task("quick", total=5, unit="rows") as item):
        item.advance(5)
        lines.tick(item.started + 0.5)
    assert out.getvalue() == ""


def test_lines_start_heartbeat_and_end_with_durations():
    out = io.StringIO()
    with (progress.installed(Lines(out, after=1.0, heartbeat=30.0, ticking=False)) as lines,
          progress.task("recommender @ prod-2026-09", keep=True) as pair):
        pair.phase("check")
        t0 = pair.started
        lines.tick(t0 + 0.5)
        assert out.getvalue() == ""
        pair.phase("train")
        lines.tick(pair.phase_started + 1.5)  # both the pair and the phase now ran >= 1 s
        lines.tick(pair.phase_started + 20)  # nothing new: no heartbeat yet
        lines.tick(pair.phase_started + 45)
        lines.tick(pair.phase_started + 50)  # 5 s after the last line: no heartbeat
        pair.phase("save")
    got = lines_of(out)
    assert got[:3] == ["recommender @ prod-2026-09: started",
                       "train recommender @ prod-2026-09: started",
                       "train recommender @ prod-2026-09: 45 s"]
    assert re.fullmatch(r"train recommender @ prod-2026-09: done in \d\.\d\d s", got[3])
    assert re.fullmatch(r"recommender @ prod-2026-09: done in \d\.\d\d s \(check \d\.\d\d s, "
                        r"train \d\.\d\d s, save \d\.\d\d s\)", got[4])
    assert len(got) == 5 and not CONTROL.search(out.getvalue())


def test_lines_heartbeat_reports_the_amount_done():
    out = io.StringIO()
    with (progress.installed(Lines(out, after=1.0, heartbeat=30.0, ticking=False)) as lines,
          progress.task("hash data/big.csv", total=3 << 30, unit="bytes") as bar):
        bar.advance(1 << 29)
        lines.tick(bar.started + 1)
        lines.tick(bar.started + 31)
        bar.advance((3 << 30) - (1 << 29))
    got = lines_of(out)
    assert got[:2] == ["hash data/big.csv: started",
                       "hash data/big.csv: 31 s (512 MiB of 3.0 GiB)"]
    assert got[2].startswith("hash data/big.csv: done in ") and "(3.0 GiB, " in got[2]


def test_the_pants_plugin_reads_the_summary_line_buildenv_writes():
    sys.path.insert(0, str(REPO_ROOT / "rules"))
    try:
        from buildenv_pants.phases import build_summary
    finally:
        sys.path.remove(str(REPO_ROOT / "rules"))
    out = io.StringIO()
    with (progress.installed(Lines(out, after=0.0, ticking=False)),
          progress.task("rec @ prod", keep=True) as pair):
        pair.phase("train")
        pair.phase(None)
        pair.timings = {"check": 0.3, "train": 55.04, "importance": 3.1, "save": 120.0}
        pair.status = "built"
    summary = build_summary(out.getvalue(), "rec", "prod")
    assert summary is not None and summary.status == "built"
    assert summary.timings == (("check", 0.3), ("train", 55.0), ("importance", 3.1),
                               ("save", 120.0))
    assert build_summary(out.getvalue(), "rec", "dev") is None


# --- the live view -----------------------------------------------------------------------------

def test_live_view_appears_after_a_second_and_is_erased_at_the_end():
    out = io.StringIO()
    live = Live(out, after=1.0, force_terminal=True, ticking=False)
    with (progress.installed(live),
          progress.task("hash data/big.parquet", total=100, unit="bytes") as bar):
        for _ in range(10_000):  # advancing draws nothing: only ticks do
            bar.advance(0)
        assert out.getvalue() == ""
        live.tick(bar.started + 0.5)
        assert out.getvalue() == ""
        bar.advance(40)
        live.tick(bar.started + 2)
        drawn = out.getvalue()
        assert "hash data/big.parquet" in drawn and "40 B of 100 B" in drawn
        assert "\x1b[?25l" in drawn  # cursor hidden while live
    tail = out.getvalue()[len(drawn):]
    assert "\x1b[?25h" in tail and tail.endswith("\x1b[2K")  # cursor back, live lines erased


def test_live_view_prints_stray_stderr_writes_above_itself():
    out = io.StringIO()
    live = Live(out, after=0.0, force_terminal=True, ticking=False)
    with progress.installed(live), progress.task("a @ prod", keep=True) as pair:
        pair.phase("register")
        live.tick(time.monotonic())
        print("FutureWarning: something deprecated", file=sys.stderr)
        live.tick(time.monotonic())
    text = out.getvalue()
    assert "FutureWarning: something deprecated" in text
    assert text.index("FutureWarning") < text.rindex("a @ prod")  # the view is redrawn below


def test_live_view_keeps_finished_pairs_and_drops_finished_bars():
    out = io.StringIO()
    live = Live(out, after=0.0, force_terminal=True, ticking=False)
    with progress.installed(live):
        with progress.task("a @ prod", keep=True) as pair:
            pair.status = "built"
        with progress.task("hash x", total=1, unit="bytes"):
            pass
        with progress.task("b @ prod", keep=True) as other:
            other.phase("train")
            live.tick(time.monotonic())
            frame = out.getvalue()
    assert "a @ prod" in frame and "built" in frame and "b @ prod" in frame and "train" in frame
    assert "hash x" not in frame


def test_renderer_choice(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress_view.renderer(io.StringIO(), "off", env={}) is None
    assert type(progress_view.renderer(io.StringIO(), "auto", env={})) is Lines
    assert type(progress_view.renderer(Tty(), "auto", env={})) is Live
    assert type(progress_view.renderer(Tty(), "auto", env={"TERM": "dumb"})) is Lines
    assert type(progress_view.renderer(Tty(), "live", env={"TERM": "dumb"})) is Lines
    assert type(progress_view.renderer(io.StringIO(), "live", env={})) is Live
    assert progress_view.renderer(Tty(), "auto", env={"NO_COLOR": "1"}).console.no_color
    assert not progress_view.renderer(Tty(), "auto", env={}).console.no_color
    lines = progress_view.renderer(io.StringIO(), "plain", env={"BUILDENV_PROGRESS_AFTER": "0",
                                                           "BUILDENV_PROGRESS_HEARTBEAT": "5"})
    assert (lines.after, lines.heartbeat) == (0.0, 5.0)
    for bad in ({"BUILDENV_PROGRESS_HEARTBEAT": "soon"}, {"BUILDENV_PROGRESS_AFTER": "-1"}):
        with pytest.raises(ValueError, match="must be a number of seconds >= 0"):
            progress_view.renderer(io.StringIO(), "plain", env=bad)
    with pytest.raises(ValueError, match="progress mode must be one of"):
        progress_view.renderer(io.StringIO(), "fancy", env={})


def test_bad_progress_settings_are_usage_errors(repo):
    code, out, err = invoke_cli(["validate", "base"], repo, env={"BUILDENV_PROGRESS": "fancy"})
    assert (code, out) == (2, "") and "BE004" in err and "BUILDENV_PROGRESS" in err
    code, _, err = invoke_cli(["validate", "base"], repo,
                              env={"BUILDENV_PROGRESS_HEARTBEAT": "x"})
    assert code == 2 and "BUILDENV_PROGRESS_HEARTBEAT" in err


# --- timings and the slowest pairs -------------------------------------------------------------

def test_phase_timings_split_the_training_process():
    own = {"wait": 0.5, "check": 0.2, "validate": 1.0, "toolchain": 0.5, "train": 10.0,
           "verify": 0.1, "save": 0.3, "register": 2.0}
    runner = {"precheck": 0.5, "train": 6.0, "importance": 1.5, "save": 0.5, "onnx": 1.0,
              "parity": 0.25, "evaluate": 0.1}
    got = phase_timings(own, runner)
    assert list(got) == [p for p in PHASES if p in got] == list(PHASES)
    # parity ran beside importance: their common span (1.5 s) comes out of `train` once
    assert got["train"] == 6.5 and got["save"] == 0.8 and got["onnx"] == 1.0
    assert got["precheck"] == 0.5 and got["parity"] == 0.25 and got["importance"] == 1.5
    assert phase_timings({"check": 0.01234}, {}) == {"check": 0.012}


def test_slowest_pairs_in_the_matrix():
    def outcome(training, env, seconds, **timings):
        return BuildOutcome(training, env, "built", seconds=seconds, timings=timings)

    outcomes = [outcome("a", "p", 0.2, check=0.2), outcome("b", "p", 61.2, train=55.0,
                                                            importance=3.1, check=0.1,
                                                            validate=2.0),
                outcome("c", "p", 5.0, train=4.0), outcome("d", "p", 3.0),
                outcome("e", "p", 1.5, save=1.0)]
    assert slowest(outcomes) == ["b @ p: 61.2 s (train 55.0 s, importance 3.10 s, "
                                 "validate 2.00 s)", "c @ p: 5.00 s (train 4.00 s)",
                                 "d @ p: 3.00 s"]
    text = render_matrix(outcomes)
    assert "slowest:\n  b @ p: 61.2 s" in text and text.endswith("5 pairs: 5 built, 0 cached, "
                                                                  "0 failed")
    assert render_matrix(outcomes, quiet=True) == "5 pairs: 5 built, 0 cached, 0 failed"
    assert render_matrix(outcomes[:1], quiet=True) == "1 pair: 1 built, 0 cached, 0 failed"


def test_one_of_a_unit_is_singular():
    with progress.task("build --all", total=1, unit="pairs") as matrix:
        assert progress_view.amount_text(matrix) == "0 of 1 pairs"
        matrix.advance(1)
        assert progress_view.amount_text(matrix) == "1 pair"
    with progress.task("infer events", unit="rows") as rows:
        rows.advance(2)
        assert progress_view.amount_text(rows) == "2 rows"


# --- the command line, end to end --------------------------------------------------------------

@pytest.fixture(scope="module")
def locked(tmp_path_factory) -> Path:
    return write_repo(tmp_path_factory.mktemp("progress"), lock=True)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUILDENV_ROOT", "NO_COLOR", "BUILDENV_PROGRESS", "TERM")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


def run_in_pty(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """`python -m buildenv ARGS` with a pseudo-terminal as stdin, stdout and stderr."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "buildenv", *args], env)
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_terminal_gets_a_live_view_that_ends_cleanly(locked, tmp_path):
    code, out = run_in_pty(["build", "demo", "--env", "base", "--no-register", "--no-cache",
                            "--out", str(tmp_path / "a")], locked,
                           cli_env(TERM="xterm-256color", BUILDENV_PROGRESS_AFTER="0.2"))
    assert code == 0, out
    hide, show = out.index("\x1b[?25l"), out.rindex("\x1b[?25h")
    live = out[hide:show]
    assert "demo @ base" in live and "train" in live and "\x1b[36m" in live  # coloured phase
    assert live.count("\r") >= 2  # redrawn in place
    after = out[show:]
    assert "demo @ base: built (not built before)" in after
    assert after.rstrip().endswith(str(tmp_path / "a")) or "-> " in after
    assert "\x1b[?25l" not in after  # nothing live after the end


def test_terminal_respects_no_color_and_dumb(locked, tmp_path):
    code, out = run_in_pty(["build", "demo", "--env", "base", "--no-register", "--no-cache",
                            "--out", str(tmp_path / "a")], locked,
                           cli_env(TERM="xterm", NO_COLOR="1", BUILDENV_PROGRESS_AFTER="0.2"))
    assert code == 0, out
    assert "\x1b[?25l" in out and "demo @ base" in out
    assert not re.search(r"\x1b\[[0-9;]*m", out)  # cursor moves, but no colour
    code, out = run_in_pty(["build", "demo", "--env", "base", "--no-register", "--no-cache",
                            "--out", str(tmp_path / "b")], locked,
                           cli_env(TERM="dumb", BUILDENV_PROGRESS_AFTER="0.2"))
    assert code == 0, out
    assert "\x1b" not in out and "train demo @ base: started" in out


def test_pipe_gets_status_lines_and_heartbeats(locked, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "buildenv", "build", "demo", "--env", "base", "--no-register",
         "--no-cache", "--out", str(tmp_path / "a")], cwd=locked, capture_output=True,
        text=True, timeout=300, env=cli_env(BUILDENV_PROGRESS_HEARTBEAT="0.5"))
    assert proc.returncode == 0, proc.stderr
    assert not CONTROL.search(proc.stderr) and not CONTROL.search(proc.stdout)
    lines = proc.stderr.splitlines()
    assert "demo @ base: started" in lines and "train demo @ base: started" in lines
    assert any(re.fullmatch(r"train demo @ base: \d+ s", line) for line in lines), lines
    assert any(re.fullmatch(r"train demo @ base: done in \d+\.\d+ s", line) for line in lines)
    assert re.fullmatch(r"demo @ base: built in \d+\.\d+ s \(check .* s, validate .* s, "
                        r"train .* s, importance .* s, verify .* s, save .* s\)", lines[-1])
    assert proc.stdout.startswith("demo @ base: built (not built before) -> ")


def mask_times(text: str) -> dict:
    data = json.loads(text)
    for pair in data.get("pairs", []):
        assert set(pair["timings"]) <= set(PHASES) and pair["timings"]
        pair["seconds"], pair["timings"] = 0, sorted(pair["timings"])
    return data


@pytest.mark.parametrize("args", [["lock", "--check"], ["lock"], ["validate", "base"],
                                  ["drift", "base", "--dataset", "movies", "--against",
                                   "data/movies-v2.parquet"]])
def test_json_output_is_the_same_with_and_without_progress(locked, args):
    env = cli_env(BUILDENV_PROGRESS_AFTER="0")
    (locked / ".buildenv" / "statcache.json").unlink(missing_ok=True)  # hash again
    quiet = subprocess.run([sys.executable, "-m", "buildenv", *args, "--format", "json",
                            "--no-progress"], cwd=locked, capture_output=True, env=env,
                           timeout=300)
    (locked / ".buildenv" / "statcache.json").unlink(missing_ok=True)
    shown = subprocess.run([sys.executable, "-m", "buildenv", *args, "--format", "json",
                            "--progress"], cwd=locked, capture_output=True, env=env, timeout=300)
    assert quiet.returncode == shown.returncode and quiet.stdout == shown.stdout
    json.loads(shown.stdout)
    assert quiet.stderr == b"" and b": started" in shown.stderr  # progress went to stderr


def test_build_json_carries_timings_and_is_unchanged_by_progress(locked, tmp_path):
    outs = []
    for i, flag in enumerate(["--no-progress", "--progress"]):
        proc = subprocess.run(
            [sys.executable, "-m", "buildenv", "build", "demo", "--env", "base", "--no-cache",
             "--no-register", "--out", str(tmp_path / str(i)), "--format", "json", flag],
            cwd=locked, capture_output=True, text=True, timeout=300,
            env=cli_env(BUILDENV_PROGRESS_AFTER="0"))
        assert proc.returncode == 0, proc.stderr
        outs.append(proc)
    first, second = (mask_times(p.stdout) for p in outs)
    for data in (first, second):
        data["pairs"][0]["artifact"] = None
    assert first == second
    assert first["pairs"][0]["timings"] == sorted(["check", "validate", "toolchain", "train",
                                                   "importance", "verify", "parity", "save"])
    assert outs[0].stderr == "" and "demo @ base: built in" in outs[1].stderr


def test_quiet_prints_errors_and_the_summary_only(locked, tmp_path):
    stale = locked / "environments" / "base.yaml"
    original = stale.read_text()
    # a wider range: the data pins still hold, the recorded environment is stale (BE052 warning)
    stale.write_text(original.replace("range: [1, 600]", "range: [1, 700]"))
    try:
        env = cli_env(BUILDENV_PROGRESS_AFTER="0")
        loud = subprocess.run(
            [sys.executable, "-m", "buildenv", "build", "demo", "--env", "base", "--no-register",
             "--no-cache", "--out", str(tmp_path / "a")], cwd=locked, capture_output=True,
            text=True, timeout=300, env=env)
        quiet = subprocess.run(
            [sys.executable, "-m", "buildenv", "build", "demo", "--env", "base", "--no-register",
             "--no-cache", "--out", str(tmp_path / "b"), "--quiet"], cwd=locked,
            capture_output=True, text=True, timeout=300, env=env)
        check = invoke_cli(["lock", "--check"], locked)
        quiet_check = invoke_cli(["lock", "--check", "--quiet"], locked)
    finally:
        stale.write_text(original)
    assert loud.returncode == quiet.returncode == 0
    assert "warning[BE052]" in loud.stderr and ": started" in loud.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("demo @ base: built") and len(quiet.stdout.splitlines()) == 1
    assert check[0] == 0 and "warning[BE052]" in check[2] and check[1] == ""
    assert quiet_check == (0, "2 lock(s) up to date\n", "")
    # errors still come through
    code, out, err = invoke_cli(["validate", "base", "--quiet", "--dataset", "nope"], locked)
    assert code == 2 and "BE009" in err
    code, out, err = invoke_cli(["lock", "--quiet"], locked)
    assert (code, out, err) == (0, "2 lock(s): 0 updated, 2 unchanged\n", "")


def test_quiet_drift_keeps_alerts_and_the_count(locked):
    args = ["drift", "base", "--dataset", "movies", "--against", "data/movies-v2.parquet"]
    env = {"BUILDENV_PROGRESS_AFTER": "0"}
    code, loud, loud_err = invoke_cli(args, locked, env=env)
    quiet_code, quiet, quiet_err = invoke_cli([*args, "--quiet"], locked, env=env)
    assert code == quiet_code == 1  # the genre shift is an alert
    assert loud.startswith("drift of movies in base") and "profile data/movies" in loud_err
    assert quiet_err == "" and "drift of" not in quiet and "statistics:" not in quiet
    quiet_lines = quiet.splitlines()
    assert quiet_lines[-1] == next(line for line in loud.splitlines()
                                   if re.match(r"\d+ alerts? on \d+ columns compared", line))
    assert "error[" in quiet and set(quiet_lines) <= set(loud.splitlines())


def test_every_long_command_takes_the_progress_flags():
    for name in ("lock", "validate", "drift", "build", "retrain", "image"):
        code, out, _ = invoke_cli([name, "--help"], REPO_ROOT)
        flat = " ".join(out.split())
        assert code == 0 and "--progress" in flat and "--no-progress" in flat, name
        assert "--quiet" in flat, name


def test_registered_run_carries_the_phase_timings(locked, tmp_path):
    from buildenv.compile.registry import client
    from buildenv.core.project import Project

    code, out, err = invoke_cli(["build", "demo", "--env", "base", "--no-cache", "--out",
                                 tmp_path / "r", "--format", "json"], locked)
    assert code == 0, err
    pair = json.loads(out)["pairs"][0]
    assert pair["registered"]["created"] and "register" in pair["timings"]
    metrics = client(Project.discover(locked)).get_run(pair["registered"]["run_id"]).data.metrics
    timed = {k: v for k, v in metrics.items() if k.startswith("timing.")}
    assert set(timed) == {f"timing.{p}_s" for p in pair["timings"]}
    for phase_name, seconds in pair["timings"].items():
        if phase_name != "register":  # the run times its own registration
            assert timed[f"timing.{phase_name}_s"] == seconds
    assert 0 < timed["timing.register_s"] <= pair["timings"]["register"]


@pytest.mark.slow
def test_retrain_quiet_prints_its_last_step_and_events_carry_build_timings(tmp_path):
    from services import events, make_churn_repo, write_events

    root = make_churn_repo(tmp_path / "repo")
    assert invoke_cli(["lock", "prod"], root)[0] == 0
    write_events(root, "events-v2.parquet", events(2))
    log = tmp_path / "events.jsonl"
    code, out, err = invoke_cli(["retrain", "prod", "--dataset", "events", "--uri",
                                 "data/events-v2.parquet", "--events", log, "--quiet"], root)
    assert code == 0, out + err
    assert out == "[finish] passed: retrained\n" and err == ""
    build = [json.loads(line) for line in log.read_text().splitlines()
             if json.loads(line)["step"] == "build"]
    assert len(build) == 1 and {"check", "validate", "train", "save"} <= set(build[0]["timings"])


@pytest.mark.slow
def test_image_reports_its_layers_and_quiet_prints_the_archive_only(tmp_path):
    import hashlib
    import tarfile

    from services import make_churn_repo

    root = make_churn_repo(tmp_path / "repo")
    for args in (["lock", "prod"], ["build", "churn", "--env", "prod", "--no-register"]):
        code, out, err = invoke_cli(args, root)
        assert code == 0, out + err
    base = tmp_path / "rootfs.tar"
    with tarfile.open(base, "w") as tar:
        info = tarfile.TarInfo(f"./usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
        tar.addfile(info, io.BytesIO(b""))
    args = ["image", "churn", "--env", "prod", "--base-rootfs", base, "--oci"]
    code, loud, loud_err = invoke_cli([*args, tmp_path / "a.tar"], root,
                                      env={"BUILDENV_PROGRESS_AFTER": "0"})
    assert code == 0, loud + loud_err
    assert loud.startswith("context: .buildenv/image/churn/prod (python ")
    for line in ("layer 1 of 2: compress the base rootfs: started",
                 "layer 2 of 2: compress the app: started", "archive churn @ prod (image): started"):
        assert line in loud_err.splitlines(), loud_err
    assert re.search(r"^churn @ prod \(image\): done in .* \(context .* s, oci .* s, "
                     r"base layer .* s, app layer .* s, archive .* s\)$", loud_err, re.M)
    code, quiet, quiet_err = invoke_cli([*args, tmp_path / "b.tar", "--quiet"], root,
                                        env={"BUILDENV_PROGRESS_AFTER": "0"})
    assert (code, quiet_err) == (0, "")
    assert quiet == loud.splitlines()[-1].replace("a.tar", "b.tar") + "\n"
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.tar", "b.tar")]
    assert digest[0] == digest[1]  # progress changes nothing in what is written
