"""A large local CSV's records counted in a child process beside the hash (`row_process`):
the rows equal the in-process counter's and the decoder's on adversarial files, the digest is
hashlib's; a child that fails or says something else is not trusted (the rows are counted in
the parent); a failing hash leaves no child behind; a file replaced or changed in between is
reported; small files and one-CPU machines keep the in-process pass."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli, write_repo
from test_lock import CSV_ENV
from test_row_counts import decoder_rows, generated_csv

from buildenv.data.lock import digests, row_process
from buildenv.data.lock.csv_rows import _BOM, count_rows
from buildenv.data.storage import locate


class _Root:
    def __init__(self, path: Path):
        self.data_base = path


def digest(path: Path) -> digests.ContentDigest:
    return digests.compute_digest(locate(path.name, _Root(path.parent)), "csv", "sha256")  # type: ignore[arg-type]


class Spy:
    """Records every child started and what it answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.answers: list[tuple[int, int] | None] = []
        start, result = row_process.RowCountProcess.__init__, row_process.RowCountProcess.result
        spy = self

        def init(self: row_process.RowCountProcess, path: Path) -> None:
            start(self, path)
            spy.processes.append(self._process)

        def answer(self: row_process.RowCountProcess, size: int) -> tuple[int, int] | None:
            spy.answers.append(result(self, size))
            return spy.answers[-1]

        monkeypatch.setattr(row_process.RowCountProcess, "__init__", init)
        monkeypatch.setattr(row_process.RowCountProcess, "result", answer)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    monkeypatch.setattr(row_process, "PROCESS_MIN", 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    return Spy(monkeypatch)


@pytest.mark.parametrize("seed", range(8))
def test_the_child_counts_adversarial_files_as_the_decoder(tmp_path, spy, seed):
    """Seeded files (BOM, LF/CRLF/CR, quoted newlines and `""`, empty lines, literal quotes,
    no final terminator, an unterminated quote), several 512 KiB pieces long so the child's
    pieces end anywhere: the child's rows are the decoder's and the in-process counter's."""
    rng = np.random.default_rng(300 + seed)
    data = generated_csv(rng, int(rng.integers(90_000, 120_000)), [0.0, 0.001, 0.3][seed % 3])
    assert len(data) > 1 << 20  # two pieces and more
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    value = digest(path)
    assert spy.answers and spy.answers[-1] is not None  # the child counted
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (value.size, value.rows) == (len(data), count_rows(data))
    assert value.rows == decoder_rows(data)


@pytest.mark.parametrize("data, rows", [(b"", 0), (_BOM, 0), (b"a,b", 0), (b"a,b\n1,2", 1),
                                       (_BOM + b'a\n"x\n\ny"\r\n\r\n2\r', 2)])
def test_the_child_counts_tiny_files(tmp_path, spy, data, rows):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    value = digest(path)
    assert spy.answers == [(rows, len(data))]
    assert (value.digest, value.rows) == ("sha256:" + hashlib.sha256(data).hexdigest(), rows)


@pytest.mark.parametrize("code", ["import sys; sys.exit(3)", "from buildenv import nothing",
                                  "print('many rows')", "print('1 2 3')", "print('-1 4')",
                                  "import os; os.kill(os.getpid(), 9)",
                                  "import time; time.sleep(60)"])
def test_a_failing_or_garbled_child_is_not_trusted(tmp_path, spy, monkeypatch, code):
    """A child that fails (exit status, a signal), prints something else or hangs (ended
    after its grace time): the rows are counted in the parent, and are right."""
    monkeypatch.setattr(row_process, "_CHILD", code)
    monkeypatch.setattr(row_process, "_GRACE_S", 1.0)
    data = b"a,b\n" + b'1,"x\ny"\n' * 50_000
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    value = digest(path)
    assert spy.answers == [None]
    assert (value.size, value.rows) == (len(data), 50_000)


def test_a_failing_hash_leaves_no_child_behind(tmp_path, spy, monkeypatch):
    def broken(*args: object) -> int:
        raise OSError("disk went away")

    monkeypatch.setattr(digests, "_hash_into", broken)
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n1\n" * 1000)
    with pytest.raises(OSError, match="disk went away"):
        digest(path)
    assert len(spy.processes) == 1 and spy.processes[0].returncode is not None  # reaped


def test_a_file_replaced_after_the_child_opened_it_is_reported(tmp_path, spy, monkeypatch):
    path, other = tmp_path / "t.csv", tmp_path / "u.csv"
    path.write_bytes(b"a\n1\n")
    other.write_bytes(b"a\n1\n2\n")
    start = row_process.RowCountProcess.__init__

    def then_replace(self: row_process.RowCountProcess, where: Path) -> None:
        start(self, where)
        os.replace(other, path)

    monkeypatch.setattr(row_process.RowCountProcess, "__init__", then_replace)
    with pytest.raises(ValueError, match="changed while it was being hashed"):
        digest(path)
    assert all(p.returncode is not None for p in spy.processes)


def test_bytes_counted_but_not_hashed_are_reported(tmp_path, spy, monkeypatch):
    """The child counted another length than the parent hashed (the file grew in between)."""
    monkeypatch.setattr(row_process.RowCountProcess, "result", lambda self, size: (1, 999))
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n1\n")
    with pytest.raises(ValueError, match="changed while it was being hashed"):
        digest(path)


def test_small_files_one_cpu_and_busy_cpus_keep_the_in_process_pass(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n" + b"1\n" * 1000)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(row_process, "PROCESS_MIN", 1 << 20)
    assert digest(path).rows == 1000  # small
    monkeypatch.setattr(row_process, "PROCESS_MIN", 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert digest(path).rows == 1000  # one CPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 0.5, 0.5))
    assert digest(path).rows == 1000  # both CPUs busy
    assert spy.processes == []
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 3.0, 3.0))
    assert digest(path).rows == 1000
    assert len(spy.processes) == 1


def test_the_child_imports_through_the_parents_path(tmp_path, spy, monkeypatch):
    """The child imports `buildenv` (and numpy) through the parent's module path, in its
    order, also from a directory not on the interpreter's default path (a checkout run from
    its directory): a copy first on the parent's path, whose child answers 4242 rows, is the
    one that answers."""
    import buildenv

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(buildenv.__file__).parent, checkout / "buildenv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = checkout / "buildenv" / "data" / "lock" / "row_process.py"
    source = module.read_text()
    assert "rows, size = count_file(handle)" in source
    module.write_text(source.replace("rows, size = count_file(handle)",
                                     "rows, size = 4242, count_file(handle)[1]"))
    monkeypatch.syspath_prepend(str(checkout))
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n1\n")
    assert digest(path).rows == 4242


def test_a_relative_module_path_means_the_directory_buildenv_was_imported_in(tmp_path, spy,
                                                                            monkeypatch):
    """A relative entry of the module path (a test runner's source roots, `PYTHONPATH=.`)
    still finds the parent's copy after the command changed directory (to the repository):
    the child gets it made absolute against the directory of the import."""
    import buildenv

    checkout = tmp_path / "imported-here" / "src"
    shutil.copytree(Path(buildenv.__file__).parent, checkout / "buildenv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = checkout / "buildenv" / "data" / "lock" / "row_process.py"
    module.write_text(module.read_text().replace("rows, size = count_file(handle)",
                                                 "rows, size = 4343, count_file(handle)[1]"))
    monkeypatch.setattr(row_process, "_IMPORTED_IN", str(tmp_path / "imported-here"))
    monkeypatch.setattr("sys.path", ["src", *__import__("sys").path])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n1\n")
    assert digest(path).rows == 4343


def test_the_lock_written_with_the_child_is_the_in_process_ones(tmp_path, spy, monkeypatch):
    """`buildenv lock` end to end: the lock file is the same bytes whichever pass counted."""
    body = "id,text\n" + "".join(f'{i},"row {i}\r\nsecond, ""line"" {i}"\n' for i in range(20_000))
    files = {}
    for name, process_min in (("child", 0), ("in-process", 1 << 40)):
        monkeypatch.setattr(row_process, "PROCESS_MIN", process_min)
        root = write_repo(tmp_path / name, envs={"csvenv": CSV_ENV},
                          files={"data/notes.csv": body})
        code, _, err = invoke_cli(["lock", "csvenv"], root)
        assert (code, err) == (0, ""), err
        files[name] = (root / "environments" / "csvenv.lock.json").read_bytes()
    assert spy.answers == [(20_000, len(body))]  # the child counted the first lock only
    assert files["child"] == files["in-process"]
    assert json.loads(files["child"])["datasets"]["notes"]["rows"] == 20_000


def test_no_child_to_be_had_keeps_the_in_process_pass(tmp_path, spy, monkeypatch):
    """Starting the child fails (no processes left, no interpreter): the in-process pass
    counts; a missing file is still reported as missing."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    path = tmp_path / "t.csv"
    path.write_bytes(b"a\n" + b'"1\n2"\n' * 1000)
    value = digest(path)
    assert (value.rows, spy.processes) == (1000, [])
    with pytest.raises(FileNotFoundError):
        digest(tmp_path / "missing.csv")


def test_the_child_ends_when_the_command_does(tmp_path):
    """A command that ends without stopping its child (a usage error, Ctrl-C, SIGKILL) leaves
    no counting child behind: the child looks for its parent and leaves once it is gone."""
    import sys
    import time

    command = ("import os, subprocess, sys\n"
               "child = subprocess.Popen([sys.executable, '-c', 'import sys, time\\n"
               "from buildenv.data.lock.row_process import _leave_with_parent\\n"
               "_leave_with_parent(int(sys.argv[1])); time.sleep(120)', str(os.getpid())],\n"
               "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
               "print(child.pid, flush=True)\n"
               "os._exit(0)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # a zombie: it ended, its new parent has not reaped it yet
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the child outlived its command")
