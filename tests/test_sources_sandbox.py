"""Transforms and labeling functions run in the training's sandbox (docs/derived.md,
docs/sandbox.md): their declared inputs through `ctx`, their output written, nothing else. A
transform that opens a data file directly, a file outside the repository or a socket is refused
with the sandbox's code naming the transform; so is a labeling function; with `sandbox = "off"`
the same transform runs (the sandbox is what refused it)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import invoke_cli
from sandbox_repo import sandbox_usable
from sourcerepo import source_fixtures

_progress, template, locked = source_fixtures("sources_sandbox")

SENTINEL = "SENTINEL-5d0b2a"  # a value outside the repository: never in any output

pytestmark = pytest.mark.skipif(not sandbox_usable("any"), reason="no sandbox on this machine")


def _transform(root: Path, body: str) -> None:
    (root / "transforms" / "daily.py").write_text(
        "import socket\n\nimport pandas as pd\n\n\ndef daily(ctx):\n" + body +
        '    df = ctx.read("events", columns=["kind", "x"])\n'
        '    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))\n'
        '    return out.sort_values("kind").reset_index(drop=True)\n')


def _relock(root: Path) -> tuple[int, str]:
    lock = root / "environments" / "ev.lock.json"
    before = lock.read_bytes()
    code, _, err = invoke_cli(["lock", "ev"], root)
    if code != 0:
        assert lock.read_bytes() == before  # nothing partial
    return code, err


def _data_file(root: Path) -> Path:
    return sorted((root / "data" / "events").rglob("*.parquet"))[0]


def test_a_transform_opening_a_data_file_directly_is_refused_naming_it(locked):
    path = _data_file(locked).relative_to(locked)
    _transform(locked, f'    open("{path}", "rb").read()\n')
    code, err = _relock(locked)
    assert code == 1 and "BE322" in err, err
    assert "the transform transforms/daily.py:daily of dataset 'daily' opened" in err, err
    assert "transforms/daily.py:7" in err and "input file date=" in err, err


def test_a_transform_reading_outside_the_repository_is_refused_and_runs_without_sandbox(
        locked, tmp_path):
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(SENTINEL)
    _transform(locked, f'    assert open("{secret}").read()\n')
    code, err = _relock(locked)
    assert code == 1 and "BE322" in err and "which the sandbox does not show" in err, err
    assert "of dataset 'daily'" in err and SENTINEL not in err, err
    assert not any(SENTINEL.encode() in p.read_bytes()
                   for p in (locked / ".buildenv").rglob("*") if p.is_file())
    pyproject = locked / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.buildenv]\n", '[tool.buildenv]\nsandbox = "off"\n'))
    code, err = _relock(locked)
    assert code == 0, err


def test_a_transform_reaching_the_network_is_refused(locked):
    with socket.create_server(("127.0.0.1", 0)) as server:  # listening on the host
        port = server.getsockname()[1]
        _transform(locked, f'    socket.create_connection(("127.0.0.1", {port}), timeout=5)\n')
        code, err = _relock(locked)
    assert code == 1 and "BE324" in err and "of dataset 'daily' tried to" in err, err
    assert "never reach the network" in err, err


@pytest.mark.skipif(not sandbox_usable("landlock"), reason="no Landlock on this machine")
def test_under_landlock_alone_proc_is_shown_not_blamed(locked):
    """Landlock alone lets the runner read /proc (its confinement's rules): reading it is
    nothing the sandbox refused, so an error there is the transform's own (BE340), not a
    refusal (BE322). (The runner's own scan of /proc for leftover processes, after the jobs,
    noted 64 such attempts, a stack walk each, on a rebuild's critical path.)"""
    _transform(locked, '    open("/proc/self/no-such-file")\n')
    code, _, err = invoke_cli(["lock", "ev"], locked,
                              env={"BUILDENV_SANDBOX_MECHANISM": "landlock"})
    assert code == 1 and "BE340" in err and "FileNotFoundError" in err, err
    assert "BE322" not in err and "does not show" not in err, err


def test_a_labeling_function_opening_a_data_file_is_refused_naming_its_label_set(locked):
    path = _data_file(locked).relative_to(locked)
    rules = locked / "rules" / "sign.py"
    rules.write_text(rules.read_text().replace(
        '    return np.where(batch["kind"] == "a", "pos", None)',
        f'    open("{path}", "rb").read()\n'
        '    return np.where(batch["kind"] == "a", "pos", None)'))
    code, err = _relock(locked)
    assert code == 1 and "BE322" in err, err
    assert "the labeling functions of label set 'rules' (rules/sign.py) opened" in err, err


def test_outputs_of_a_sandboxed_build_equal_an_unsandboxed_one(locked):
    """The happy path under the sandbox makes the same bytes as without one."""
    sandboxed = json.loads((locked / "environments" / "ev.lock.json").read_text())
    pyproject = locked / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.buildenv]\n", '[tool.buildenv]\nsandbox = "off"\n'))
    for store in ("derived", "votes", "keys"):  # everything made again, without the sandbox
        for path in (locked / ".buildenv").rglob(store):
            if path.is_dir():
                shutil.rmtree(path)
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0, err
    unsandboxed = json.loads((locked / "environments" / "ev.lock.json").read_text())
    assert unsandboxed["datasets"]["daily"] == sandboxed["datasets"]["daily"]
    assert unsandboxed["labels"]["rules"] == sandboxed["labels"]["rules"]
