"""`buildenv lock` ends its process as soon as its output is flushed (`cli.run`), without the
interpreter's teardown (exit handlers still run); its exit code and output are those of `main`.
Other commands exit the ordinary way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, write_repo

# A sitecustomize with an exit handler (it must always run: a user's, a coverage tool's) and an
# object finalised only when the interpreter tears its modules down.
SITE = """\
import atexit, os
atexit.register(lambda: open(os.environ["TEARDOWN_MARK"] + ".handler", "w").close())
class Late:
    def __del__(self, open=open, environ=os.environ):
        open(environ["TEARDOWN_MARK"], "w").close()
kept = Late()
"""


def buildenv(root: Path, site: Path, mark: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO_ROOT)]),
               TEARDOWN_MARK=str(mark))
    return subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_lock_skips_the_teardown_and_keeps_its_exit_code_and_output(tmp_path):
    root = write_repo(tmp_path / "repo")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    mark = tmp_path / "torn-down"

    done = buildenv(root, site, mark, "lock", "child")
    assert done.returncode == 0, done.stderr
    assert "child: " in done.stdout  # flushed before the process ended
    assert not mark.exists()
    handler = mark.with_name(mark.name + ".handler")
    assert handler.exists()  # exit handlers ran all the same
    handler.unlink()

    stale = buildenv(root, site, mark, "lock", "nosuch")
    assert stale.returncode == 2 and "nosuch" in stale.stderr
    assert not mark.exists() and handler.exists()

    other = buildenv(root, site, mark, "validate", "child")
    assert mark.exists(), other.stderr  # not a quick command: exit handlers ran
