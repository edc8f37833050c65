"""How the sandbox is built and what it keeps: the same model bytes, audit records appended by
the build, remote data without credentials, no leftovers; and its parts on their own
(seccomp, Landlock, the filesystem view, bubblewrap's command line, the broker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import invoke_cli
from moto_s3 import fresh_bucket, moto_server  # noqa: F401 (fixtures `s3`, `moto_endpoint`)
from sandbox_repo import SENTINEL, make_sandbox_repo, sandbox_usable
from services import CACHE

from buildenv.compile import bwrap
from buildenv.compile.isolation import detect
from buildenv.compile.sandbox_view import View, filesystem_view
from buildenv.core.project import Project
from buildenv.data.gate.broker import Broker, pinned_locations
from buildenv.env.resolve import Multiverse

WORKLOAD = ('''\
    from multiprocessing import Pool

    from sklearn.ensemble import RandomForestClassifier


    def square(x):
        return x * x


    def train(ctx):
        with Pool(2) as pool:
            assert pool.map(square, range(4)) == [0, 1, 4, 9]
        df = ctx.read("items", columns=["x1", "y"])
        return RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=0).fit(
            df[["x1"]], df["y"])
    ''', ["open"])

PEOPLE = ('''\
    from train.common import fit


    def train(ctx):
        people = ctx.read("people", columns=["name", "x2"])
        ctx.log_metric("people", len(people))
        return fit(ctx)
    ''', ["secret"])

MECHANISMS = ["auto", "landlock", "none"]
RECORDS = ("buildenv.json", "model_card.md", "model_card.json")


def _build(root, name, env, out, mechanism, *extra):
    return invoke_cli(["build", name, "--env", env, "--no-register", "--no-cache", "--out", out,
                       "--no-progress", *extra], root,
                      env={"BUILDENV_SANDBOX_MECHANISM": mechanism})


@pytest.mark.slow
def test_models_are_byte_identical_with_and_without_the_sandbox(tmp_path):
    root = make_sandbox_repo(tmp_path / "repo", {"workload": WORKLOAD})
    assert invoke_cli(["lock"], root)[0] == 0
    files = {}
    for mechanism in MECHANISMS:
        if not sandbox_usable(mechanism):
            continue
        out = tmp_path / mechanism
        code, _, err = _build(root, "workload", "open", out, mechanism)
        assert code == 0, err
        lineage = json.loads((out / "buildenv.json").read_text())
        assert lineage["isolation"]["mechanism"] == {
            "auto": detect().mechanism, "landlock": "landlock", "none": "none"}[mechanism]
        files[mechanism] = {p.relative_to(out).as_posix(): p.read_bytes()
                            for p in sorted(out.rglob("*")) if p.is_file()
                            and p.name not in RECORDS}  # those say what applied
    assert len(files) >= 2
    first = next(iter(files.values()))
    assert all(other == first for other in files.values())


def _audit_lines(root: Path) -> list[dict]:
    log = root / ".buildenv" / "audit" / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_restricted_reads_are_audited_by_the_build(tmp_path):
    root = make_sandbox_repo(tmp_path / "repo", {"people": PEOPLE})
    secret = root / "environments" / "secret.yaml"
    secret.write_text(secret.read_text() + "  sandbox: optional\n")  # to compare with none
    assert invoke_cli(["lock"], root)[0] == 0
    counts = {}
    for mechanism in MECHANISMS:
        if not sandbox_usable(mechanism):
            continue
        before = len(_audit_lines(root))
        code, out, err = _build(root, "people", "secret", tmp_path / mechanism, mechanism)
        assert code == 0, err
        added = _audit_lines(root)[before:]
        counts[mechanism] = [(r["dataset"], r["purpose"], r["columns"], r["rows"],
                              r["details"]["outcome"]) for r in added
                             if r["purpose"] != "validate"]  # the first build validates
        assert SENTINEL not in out + err
    assert counts["none"] == [("people", "build", ["name", "x2"], 300, "read")]
    assert all(found == counts["none"] for found in counts.values())
    code, out, err = invoke_cli(["audit", "--verify"], root)
    assert code == 0 and "hash chain intact" in out, out + err


REMOTE = """\
name: remote
datasets:
  items:
    uri: s3://{bucket}/items.parquet
    columns:
      x1: {{dtype: float64}}
      cat: {{dtype: string, domain: [a, b, c]}}
      y: {{dtype: bool, nullable: false}}
label: {{dataset: items, column: y, classes: [false, true]}}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.LogisticRegression]
  requirements: ["scikit-learn>=1.6,<2"]
"""

NO_CREDENTIALS = ('''\
    import os

    from train.common import fit


    def train(ctx):
        leaked = sorted(k for k in os.environ if k.startswith("AWS_"))
        assert not leaked, leaked
        return fit(ctx)
    ''', ["remote"])


@pytest.mark.slow
def test_remote_data_reaches_the_training_without_credentials_or_network(tmp_path, s3):
    if not sandbox_usable("any"):
        pytest.skip("no sandbox here")
    client, bucket = s3
    root = make_sandbox_repo(tmp_path / "repo", {"remote": NO_CREDENTIALS})
    client.put_object(Bucket=bucket, Key="items.parquet",
                      Body=(root / "data" / "items.parquet").read_bytes())
    (root / "environments" / "remote.yaml").write_text(REMOTE.format(bucket=bucket))
    assert invoke_cli(["lock", "remote"], root)[0] == 0
    code, out, err = _build(root, "remote", "remote", tmp_path / "out", "auto")
    assert code == 0, err
    lineage = json.loads((tmp_path / "out" / "buildenv.json").read_text())
    assert lineage["isolation"]["data"] == "handed-over descriptors"


SLEEPER = '''\
import os
import time


def train(ctx):
    if os.fork() == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "{marker}"])
    time.sleep(300)
'''


def _processes(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def _mounts_beside(tmp_path: Path) -> list[str]:
    """This machine's mount table, less what other tests running at the same time mount in
    their own temporary directories (dockerd's network namespaces) or in the tests' cached
    Docker data root (dockerd's overlay mounts): a build's leftovers would
    be under this test's directory, the system's trees or the sandbox's private directory."""
    base = str(tmp_path.parents[1])  # this session's base: every test's tmp_path is below
    docker = str(CACHE / "docker")  # the tests' dockerd mounts its cached data root there

    def others(line: str) -> bool:  # (whatever cache directory that test process was given)
        point = line.split()[4]
        return point == docker or point.startswith(docker + "/") or \
            point.endswith("/buildenv/docker") or "/buildenv/docker/" in point

    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(tmp_path) in line or (base not in line and "/pytest-of-" not in line
                                         and not others(line))]


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["auto", "landlock"])
def test_a_timeout_stops_everything_and_leaves_nothing(tmp_path, mechanism, monkeypatch):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # the build's temp dirs go here
    if not sandbox_usable(mechanism):
        pytest.skip(f"no {mechanism} sandbox here")
    marker = f"{4000 + os.getpid() % 1000}.{len(mechanism)}"
    root = make_sandbox_repo(tmp_path / "repo",
                             {"sleeper": (SLEEPER.replace("{marker}", marker), ["open"])})
    assert invoke_cli(["lock"], root)[0] == 0
    mounts = _mounts_beside(tmp_path)
    code, out, err = _build(root, "sleeper", "open", tmp_path / "out", mechanism,
                            "--timeout", "20")
    assert code == 1 and "error[BE302]: training exceeded its time limit of 20 s" in err, err
    assert _processes(marker) == []
    assert _mounts_beside(tmp_path) == mounts
    assert list(private.iterdir()) == []
    assert not list((root / ".buildenv" / "tmp").glob(".*"))


def test_stopping_a_reaped_runner_signals_no_pid(monkeypatch):
    """Once the runner is reaped its pid may be another process's, and its children were
    handed on when it exited: `stop` walks and signals nothing then (a derived rebuild
    stopped its exited runner twice, each a walk of /proc, on the build's tail); a runner
    still running has its whole tree killed."""
    from buildenv.compile import sandbox
    from buildenv.core import process_tree

    walked: list[int] = []
    monkeypatch.setattr(process_tree, "kill_tree", lambda pid, **_: walked.append(pid) or 0)
    box = object.__new__(sandbox.Sandbox)  # `stop` needs nothing of the sandbox's set-up
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    box.stop(done)
    assert walked == []
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as running:
        try:
            box.stop(running)
            assert walked == [running.pid]
        finally:
            running.kill()


def test_sockets_outside_the_allowed_families_are_refused():
    program = textwrap.dedent("""
        import socket
        from buildenv.core.confine import seccomp
        seccomp.restrict_sockets([socket.AF_UNIX])
        a, b = socket.socketpair()
        a.sendall(b"ok"); assert b.recv(2) == b"ok"
        socket.socket(socket.AF_UNIX).close()
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.socket(family)
            except PermissionError:
                continue
            raise SystemExit(f"family {family} allowed")
        print("refused")
    """)
    from buildenv.core.confine import seccomp

    if not seccomp.supported():
        pytest.skip("no filter for this architecture")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "refused"), done.stderr


def test_landlock_allows_only_its_trees(tmp_path):

    if not sandbox_usable("landlock"):
        pytest.skip("no Landlock here")
    for name in ("readable", "writable", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    program = textwrap.dedent(f"""
        import sys
        from buildenv.core.confine import landlock
        landlock.restrict([sys.prefix, sys.base_prefix, "/usr", "{tmp_path}/readable"], [],
                          ["{tmp_path}/writable"], deny_tcp=True)
        assert open("{tmp_path}/readable/f").read() == "readable"
        open("{tmp_path}/writable/g", "w").write("w")
        for attempt in (lambda: open("{tmp_path}/other/f"),
                        lambda: open("{tmp_path}/readable/g", "w")):
            try:
                attempt()
            except PermissionError:
                continue
            raise SystemExit("allowed")
        print("confined")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "confined"), done.stderr
    assert not (tmp_path / "readable" / "g").exists()


def test_the_view_hides_data_around_the_code(tmp_path):
    root = make_sandbox_repo(tmp_path / "repo", {"fit": (
        "from train.common import fit\n\ndef train(ctx):\n    return fit(ctx)\n", ["open"])})
    (root / "train" / "vocab.csv").write_text("a\n")  # data next to the code
    env_file = root / "environments" / "open.yaml"
    env_file.write_text(env_file.read_text().replace(
        "datasets:\n", "datasets:\n  vocab:\n    uri: train/vocab.csv\n    format: csv\n"
        "    columns:\n      a: {dtype: string}\n", 1))
    venv = root / ".buildenv" / "venvs" / "t1"
    venv.mkdir(parents=True)
    project = Project.discover(root)
    env = Multiverse(project).resolve("open").env
    view = filesystem_view(project, env, project.training("fit"), sys.executable,
                           (), (tmp_path / "work",))
    real = root.resolve()
    hidden = set(view.hidden)
    assert {str(real / "data"), str(real / "environments"), str(real / ".buildenv"),
            str(real / "train" / "vocab.csv")} <= hidden
    assert str(real / "train") not in hidden and str(real) in view.read
    assert view.readable(str(real / "train" / "common.py"))
    assert not view.readable(str(real / "data" / "items.parquet"))
    assert not view.readable(os.path.expanduser("~/.ssh/id_rsa"))
    assert not view.readable("/etc/shadow") and view.readable("/etc/hostname")


def test_bubblewrap_mounts_holes_after_trees_and_makes_them_read_only_last(tmp_path):
    for name in ("repo/data", "repo/.buildenv/venv", "work", "out"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "repo" / "secret.csv").write_text("x")
    view = View(("/usr", str(tmp_path / "repo")),
                (str(tmp_path / "repo/data"), str(tmp_path / "repo/.buildenv"),
                 str(tmp_path / "repo/secret.csv")),
                (str(tmp_path / "repo/.buildenv/venv"),),
                (str(tmp_path / "work"), str(tmp_path / "out")))
    args = bwrap.command("bwrap", True, False, view, "/blank", str(tmp_path / "repo"), 7)
    text = " ".join(args)
    repo = tmp_path / "repo"
    order = [f"--ro-bind {repo} {repo}", f"--perms 0111 --tmpfs {repo}/data",
             f"--ro-bind /blank {repo}/secret.csv", f"--ro-bind {repo}/.buildenv/venv",
             f"--bind {tmp_path}/work", f"--remount-ro {repo}/data", "--remount-ro /",
             "--json-status-fd 7 --"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert "--unshare-net" in args and "--unshare-user" in args and "--cap-drop" in args


def test_a_tree_reached_through_a_symlink_keeps_its_relative_links_under_bubblewrap(tmp_path):
    """Pants links its caches into each sandbox: a venv reached as `<sandbox>/.cache/venv`
    whose packages are relative links into a store next to it."""
    if not sandbox_usable("auto"):
        pytest.skip("bubblewrap does not run here")
    (tmp_path / "real/cache/venv/site").mkdir(parents=True)
    (tmp_path / "real/cache/wheels/pkg").mkdir(parents=True)
    (tmp_path / "real/cache/wheels/pkg/f").write_text("from the store")
    (tmp_path / "real/cache/venv/site/pkg").symlink_to("../../wheels/pkg")
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox/.cache").symlink_to(tmp_path / "real/cache")
    linked = tmp_path / "sandbox/.cache/venv"
    system = tuple(t for t in ("/usr", "/bin", "/lib", "/lib64") if os.path.lexists(t))
    view = View((*system, str(linked), str(tmp_path / "real/cache/wheels")), (), (), ())
    support = detect()
    read_end, write_end = os.pipe()
    try:
        args = bwrap.command(support.bwrap, support.bwrap_userns, False, view, "/dev/null", "/",
                             write_end)
        done = subprocess.run([*args, "cat", str(linked / "site/pkg/f")], capture_output=True,
                              text=True, timeout=60, pass_fds=(write_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (done.returncode, done.stdout) == (0, "from the store"), done.stderr


def test_the_broker_hands_over_only_pinned_regular_files(tmp_path):
    root = make_sandbox_repo(tmp_path / "repo", {})
    assert invoke_cli(["lock"], root)[0] == 0
    project = Project.discover(root)
    env = Multiverse(project).resolve("secret").env
    allowed = pinned_locations(project, env, {})
    broker = Broker(project, env, allowed)
    try:
        child = socket.socket(fileno=os.dup(broker.child_fd))
        broker.started()

        def ask(request: dict) -> tuple[dict, list[int]]:
            child.sendall(json.dumps(request).encode())
            message, fds, _, _ = socket.recv_fds(child, 1 << 16, 1)
            return json.loads(message), fds

        items = str((root / "data" / "items.parquet").resolve())
        reply, fds = ask({"op": "open", "key": items})
        assert reply == {"ok": True, "memory": False} and len(fds) == 1
        assert os.pread(fds[0], 4, 0) == b"PAR1"
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.write(fds[0], b"x")
        os.close(fds[0])
        for key in (str(root / "pyproject.toml"), str(root / "data"), "/etc/hostname"):
            reply, fds = ask({"op": "open", "key": key})
            assert reply["ok"] is False and fds == [] and reply["errno"] == 13
        reply, _ = ask({"op": "audit", "record": {"purpose": "build", "environment": "open",
                                                  "dataset": "people", "digest": None,
                                                  "columns": [], "rows": 0}})
        assert reply["ok"] is False and "another environment" in reply["error"]
        child.close()
    finally:
        broker.close()


def test_the_build_spends_and_remembers_for_a_sandboxed_training_only_as_its_environment_allows(
        tmp_path):
    from buildenv.access.budget import Ledger
    from buildenv.compile.sandbox_services import privacy_services
    from buildenv.training.slice_dp import release_path

    root = make_sandbox_repo(tmp_path / "repo", {})
    secret = root / "environments" / "secret.yaml"
    secret.write_text(secret.read_text() + "  epsilon_budget: 1.5\n")
    assert invoke_cli(["lock"], root)[0] == 0
    project = Project.discover(root)
    env = Multiverse(project).resolve("secret").env
    broker = Broker(project, env, {}, privacy_services(project, env, "key-of-this-build"))
    try:
        child = socket.socket(fileno=os.dup(broker.child_fd))
        broker.started()

        def ask(op: str, **fields) -> dict:
            child.sendall(json.dumps({**fields, "op": op}).encode())
            return json.loads(child.recv(1 << 17))

        record = {"dataset": "people", "digest": "sha256:abc", "purpose": "evaluation",
                  "environment": "secret"}
        reply = ask("spend", epsilon=1.0, record=record, budget=100.0, scope="elsewhere")
        assert reply["ok"] and reply["entry"]["scope"] == "people"  # its own scope, not asked
        assert ask("spend", epsilon=1.0, record=record) == {  # its own budget: 1.5
            "ok": False, "exceeded": [1.0, 1.0, 1.5]}
        for bad in ({**record, "dataset": "items"}, {**record, "dataset": "nope"}):
            reply = ask("spend", epsilon=0.1, record=bad)
            assert not reply["ok"] and "does not restrict" in reply["error"]
        assert not ask("spend", epsilon=-1, record=record)["ok"]
        ledger = Ledger(project.data_state_dir)
        assert [(r["scope"], r["epsilon"], r["environment"]) for r in ledger.records()] == [
            ("people", 1.0, "secret")]
        assert ask("release") == {"ok": True, "data": None}
        assert ask("release", data={"cells": [[1, 2, 0.5]], "epsilon": 1.0}) == {"ok": True}
        assert json.loads(release_path(project, "key-of-this-build").read_text())["cells"] == [
            [1, 2, 0.5]]  # under the build's key, whatever the training thinks its key is
        assert ask("release")["data"] == {"cells": [[1, 2, 0.5]], "epsilon": 1.0}
        assert ask("ledger")["error"] == "unknown op 'ledger'"
        child.close()
    finally:
        broker.close()
