"""Trainings that attack the sandbox, under bubblewrap and under Landlock alone: each attempt
is refused by the kernel and reported at the user's line (docs/sandbox.md)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from conftest import invoke_cli
from sandbox_repo import make_sandbox_repo, sandbox_usable

pytestmark = pytest.mark.slow

ATTACKS = {
    "direct": ('''\
        import pandas as pd


        def train(ctx):
            return pd.read_parquet("data/items.parquet")
        ''', ["open"]),
    "listing": ('''\
        import os


        def train(ctx):
            return os.listdir("data")
        ''', ["open"]),
    "tcp": ('''\
        import socket


        def train(ctx):
            socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"rows")
        ''', ["open"]),
    "dns": ('''\
        import socket


        def train(ctx):
            return socket.getaddrinfo("pypi.org", 443)
        ''', ["open"]),
    "write": ('''\
        def train(ctx):
            with open("train/pwned.txt", "w") as handle:
                handle.write("x")
        ''', ["open"]),
    "ssh": ('''\
        def train(ctx):
            return open("{home}/.ssh/id_rsa").read()
        ''', ["open"]),
    "aws": ('''\
        def train(ctx):
            return open("{home}/.aws/credentials").read()
        ''', ["open"]),
    "child": ('''\
        import subprocess
        import sys


        def train(ctx):
            subprocess.run([sys.executable, "-c", "open('data/items.parquet').read()"],
                           check=True)
        ''', ["open"]),
    "cat": ('''\
        import subprocess


        def train(ctx):
            subprocess.run(["cat", "data/people/people.parquet"], check=True,
                           capture_output=True)
        ''', ["open"]),
    "procroot": ('''\
        import os


        def train(ctx):
            return open(f"/proc/{{os.getppid()}}/root{root}/data/items.parquet", "rb").read()
        ''', ["open"]),
    "swallow": ('''\
        from train.common import fit


        def train(ctx):
            try:
                open("data/items.parquet", "rb").read()
            except OSError:
                pass
            return fit(ctx)
        ''', ["open"]),
    "umount": ('''\
        import subprocess


        def train(ctx):
            subprocess.run(["umount", "-l", "data"], check=True, capture_output=True)
        ''', ["open"]),
    "remount": ('''\
        import subprocess


        def train(ctx):
            subprocess.run(["mount", "-o", "remount,rw", "/"], check=True, capture_output=True)
        ''', ["open"]),
    "statedir": ('''\
        def train(ctx):
            return open(".buildenv/audit/log.jsonl").read()
        ''', ["open"]),
    "shadow": ('''\
        def train(ctx):
            return open("/etc/shadow").read()
        ''', ["open"]),
    "dockersock": ('''\
        import socket


        def train(ctx):
            socket.socket(socket.AF_UNIX).connect("{home}/docker.sock")
        ''', ["open"]),
    "lockfile": ('''\
        import json


        def train(ctx):
            return json.load(open("environments/open.lock.json"))
        ''', ["open"]),
}

EXPECTED = {  # attack -> (code, line, what the message says)
    "direct": ("BE322", 5, "opened 'data/items.parquet' directly"),
    "listing": ("BE322", 5, "opened 'data' directly"),
    "tcp": ("BE324", 5, "connect to 127.0.0.1"),
    "dns": ("BE324", 5, "resolve 'pypi.org'"),
    "write": ("BE323", 2, "wrote to 'train/pwned.txt'"),
    "ssh": ("BE322", 2, "/.ssh/id_rsa', which the sandbox does not show"),
    "aws": ("BE322", 2, "/.aws/credentials', which the sandbox does not show"),
    "child": ("BE322", 6, "-c open('data/items.parquet').read()`, which names 'data'"),
    "cat": ("BE322", 5, "run `cat data/people/people.parquet`, which names 'data'"),
    "procroot": ("BE322", 5, "/data/items.parquet', which the sandbox does not show"),
    "swallow": ("BE322", 6, "opened 'data/items.parquet' directly"),
    "umount": ("BE327", 5, "run `umount -l data`"),
    "remount": ("BE327", 5, "run `mount -o remount,rw /`"),
    "statedir": ("BE322", 2, "opened '.buildenv/audit/log.jsonl' directly"),
    "lockfile": ("BE322", 5, "opened 'environments/open.lock.json' directly"),
    "dockersock": ("BE324", 5, "/docker.sock'"),
    "shadow": ("BE322", 2, "opened '/etc/shadow', which the sandbox does not show"),
}
CREDENTIAL = "AKIA-PLANTED-CREDENTIAL-5531"

MECHANISMS = ["auto", "landlock"]


class _Server:
    """A TCP server on the host's loopback that records whether anything reached it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    yield srv
    srv.sock.close()


@pytest.fixture(scope="module")
def attack_repo(tmp_path_factory, server):
    base = tmp_path_factory.mktemp("attacks")
    home = base / "home"
    home.mkdir()
    unix = socket.socket(socket.AF_UNIX)  # a host service, as Docker's socket is
    unix.bind(str(home / "docker.sock"))
    unix.listen()
    unix.setblocking(False)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN KEY----- {CREDENTIAL}\n")
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(f"[default]\naws_secret_access_key={CREDENTIAL}\n")
    root = make_sandbox_repo(base / "repo", ATTACKS, home=home, port=server.port)
    code, out, err = invoke_cli(["lock"], root)
    assert code == 0, err
    yield root, home
    try:
        unix.accept()
        raise AssertionError("a training reached the host's unix socket")
    except BlockingIOError:
        pass
    unix.close()


def _build(root: Path, home: Path, name: str, mechanism: str, out: Path, env: str = "open"):
    if not sandbox_usable(mechanism):
        pytest.skip(f"this machine offers no {mechanism} sandbox")
    return invoke_cli(["build", name, "--env", env, "--no-register", "--no-cache", "--out",
                       out, "--no-progress"], root,
                      env={"HOME": str(home), "BUILDENV_SANDBOX_MECHANISM": mechanism})


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("attack", sorted(EXPECTED))
def test_each_attack_is_refused_and_reported_at_the_users_line(attack_repo, server, tmp_path,
                                                               attack, mechanism):
    root, home = attack_repo
    accepted = server.accepted
    code, out, err = _build(root, home, attack, mechanism, tmp_path / "out")
    want, line, says = EXPECTED[attack]
    if attack == "tcp" and mechanism == "landlock":  # no IP socket at all, not even loopback
        says = "open a network socket"
    if attack == "dockersock" and mechanism == "landlock":  # no new unix socket at all
        says = "open a unix socket (one could reach a service of the host"
    first = err.splitlines()[0] if err else ""
    assert code == 1, err
    assert first.startswith(f"train/{attack}.py:{line}: error[{want}]: the training "), err
    assert says in first, err
    assert CREDENTIAL not in out + err
    assert not (tmp_path / "out").exists()
    assert server.accepted == accepted  # nothing reached the host's server
    assert not (root / "train" / "pwned.txt").exists()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_attacks_are_real_without_the_sandbox(attack_repo, server, tmp_path, mechanism):
    """The same trainings do reach what they attack when nothing stops them (so the refusals
    above are the sandbox's)."""
    if mechanism != "auto":
        pytest.skip("once is enough")
    root, home = attack_repo
    copy = tmp_path / "repo"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".buildenv", "dist"))
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('environments_dir = "environments"',
                                                       'environments_dir = "environments"\n'
                                                       'sandbox = "off"'))
    accepted = server.accepted
    for attack in ("direct", "tcp", "write", "ssh", "statedir"):
        code, out, err = invoke_cli(["build", attack, "--env", "open", "--no-register",
                                     "--no-cache", "--no-progress"], copy,
                                    env={"HOME": str(home)})
        assert not re.search(r"error\[BE32\d\]", err), (attack, err)
    assert server.accepted == accepted + 1
    assert (copy / "train" / "pwned.txt").exists()


FD_WRITE = '''\
import os

from train.common import fit


def train(ctx):
    written = []
    for _ in ctx.scan("items", columns=["x1"], batch_rows=50):
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{{name}}")
                fd = os.open(f"/proc/self/fd/{{name}}", os.O_WRONLY | os.O_APPEND)
            except OSError:
                continue
            if target.endswith("items.parquet"):
                os.write(fd, b"PWNED")
                written.append(target)
            os.close(fd)
        break
    if written:
        raise RuntimeError("wrote into the dataset")
    return fit(ctx)
'''


# No unsandboxed control case: without a sandbox the gate reads the object store's kept copy,
# whose descriptor the training does not find, so the control would show nothing either way.
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_handed_over_descriptors_cannot_be_reopened_for_writing(tmp_path, mechanism):
    """Root inside a namespace could re-open a descriptor the build handed over for writing
    through /proc/self/fd (the file lives on a writable mount outside); Landlock stops it."""
    root = make_sandbox_repo(tmp_path / "repo", {"fdwrite": (FD_WRITE, ["open"])})
    assert invoke_cli(["lock"], root)[0] == 0
    before = (root / "data" / "items.parquet").read_bytes()
    code, out, err = _build(root, tmp_path, "fdwrite", mechanism, tmp_path / "out")
    after = (root / "data" / "items.parquet").read_bytes()
    assert code == 0, err
    assert after == before
    assert invoke_cli(["lock", "--check"], root)[0] == 0


DAEMON = '''\
import os

from train.common import fit


def train(ctx):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "{marker}"])
        os._exit(0)
    os.wait()
    return fit(ctx)
'''


def _running(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline.split(b"\0"):
            found.append(int(pid))
    return found


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_detached_child_is_stopped_and_reported(tmp_path, mechanism):
    marker = f"{3000 + os.getpid() % 1000}.{len(mechanism)}"
    root = make_sandbox_repo(tmp_path / "repo",
                             {"daemon": (DAEMON.replace("{marker}", marker), ["open"])})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, tmp_path, "daemon", mechanism, tmp_path / "out")
    assert code == 0, err
    assert "warning[BE328]: the training left 1 process(es) running in a session of their " \
        "own; they were stopped" in err
    assert _running(marker) == []
