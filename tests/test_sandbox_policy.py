"""The sandbox policy: where it comes from, what it refuses, the cache key, the lineage, and
`buildenv doctor` (docs/sandbox.md)."""

from __future__ import annotations

import json
import re
import threading

import pytest
from conftest import invoke_cli
from sandbox_repo import SENTINEL, make_sandbox_repo, sandbox_usable

from buildenv.compile import sandbox
from buildenv.compile.isolation import detect

FIT = ('''\
    from train.common import fit


    def train(ctx):
        return fit(ctx)
    ''', ["open", "secret"])

NETWORK = ('''\
    import socket

    from train.common import fit


    def train(ctx):
        socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        return fit(ctx)
    ''', ["open", "secret"])

REDACT = ('''\
    from train.common import fit


    def train(ctx):
        names = ctx.read("people", columns=["name"])["name"]
        secret = [n for n in names if n.startswith("SENTINEL")][0]
        open(f"data/people/{{secret}}.csv")
        return fit(ctx)
    ''', ["secret"])


def _build(root, name, env="open", *extra, mechanism="auto"):
    return invoke_cli(["build", name, "--env", env, "--no-register", "--no-progress", *extra],
                      root, env={"BUILDENV_SANDBOX_MECHANISM": mechanism})


def _lineage(root, name, env):
    return json.loads((root / "dist" / name / env / "buildenv.json").read_text())


@pytest.fixture
def needs_bwrap():
    if not sandbox_usable("auto"):
        pytest.skip("bubblewrap does not run here")


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(sandbox, "_warned", threading.Event())


@pytest.mark.slow
def test_required_without_isolation_fails_before_anything_runs(tmp_path):
    root = make_sandbox_repo(tmp_path, {"fit": FIT}, tool='sandbox = "required"')
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "fit", mechanism="none")
    assert code == 2, err
    assert err.startswith("buildenv: error[BE320]: the sandbox is required (pyproject.toml "
                          "[tool.buildenv] sandbox) and this machine offers no isolation: "
                          "bubblewrap: not used (BUILDENV_SANDBOX_MECHANISM=none); Landlock: "
                          "not used (BUILDENV_SANDBOX_MECHANISM=none)\n"), err
    assert "hint: install bubblewrap" in err and "buildenv doctor" in err
    assert not (root / "dist").exists()
    assert not list((root / ".buildenv").glob("cache/failures/*/*"))  # the machine, not inputs


@pytest.mark.slow
def test_restricted_data_requires_the_sandbox_unless_the_environment_opts_out(tmp_path):
    root = make_sandbox_repo(tmp_path, {"fit": FIT}, tool='sandbox = "off"')
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "fit", "secret", mechanism="none")
    assert code == 2 and "error[BE320]: the sandbox is required (environment secret restricts " \
        "people (privacy.sandbox))" in err, err
    secret = root / "environments" / "secret.yaml"
    secret.write_text(secret.read_text() + "  sandbox: optional\n")
    assert invoke_cli(["lock", "secret"], root)[0] == 0
    code, out, err = _build(root, "fit", "secret", mechanism="none")
    assert code == 0, err
    assert _lineage(root, "fit", "secret")["isolation"] == {
        "data": "paths", "mechanism": "none", "network": "allow", "policy": "off"}


def test_a_child_environment_may_not_make_a_required_sandbox_optional(tmp_path):
    root = make_sandbox_repo(tmp_path, {"fit": FIT})
    (root / "environments" / "loose.yaml").write_text(
        "name: loose\nextends: secret\nprivacy:\n  sandbox: optional\n")
    code, out, err = invoke_cli(["show", "loose"], root)
    assert code == 2
    assert err.splitlines()[0] == (
        "environments/loose.yaml:4:3: error[BE019]: privacy.sandbox: trainings on secret's "
        "restricted data must run sandboxed; a child may not make the sandbox optional")


@pytest.mark.slow
def test_preferred_without_isolation_warns_once_and_records_it(tmp_path, fresh_warning):
    root = make_sandbox_repo(tmp_path, {"fit": FIT, "again": FIT})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "fit", mechanism="none")
    assert code == 0, err
    assert re.search(r"warning\[BE321\]: trainings run without a sandbox on this machine "
                     r"\(they can read any file and reach the network\): bubblewrap: not "
                     r"used", err), err
    assert _lineage(root, "fit", "open")["isolation"] == {
        "data": "paths", "mechanism": "none", "network": "allow", "policy": "preferred"}
    code, out, err = _build(root, "again", mechanism="none")
    assert code == 0 and "BE321" not in err, err  # once per process


SNEAKY = ('''\
    from train.common import fit


    def train(ctx):
        try:
            open("data/items.parquet", "rb").close()
        except OSError:
            pass
        return fit(ctx)
    ''', ["open"])


@pytest.mark.slow
def test_off_means_no_guard_either_a_direct_read_is_neither_refused_nor_reported(tmp_path):
    """`off` runs the training as before the sandbox existed: nothing refuses a direct read or
    notes it (no BE322), and the lineage says data came by path. Sandboxed, the same caught
    attempt fails the build."""
    root = make_sandbox_repo(tmp_path, {"sneaky": SNEAKY}, tool='sandbox = "off"')
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "sneaky")
    assert code == 0 and "BE32" not in err, err
    assert _lineage(root, "sneaky", "open")["isolation"] == {
        "data": "paths", "mechanism": "none", "network": "allow", "policy": "off"}
    if not sandbox_usable("any"):
        return
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('sandbox = "off"', 'sandbox = "required"'))
    code, out, err = _build(root, "sneaky")
    assert code == 1, err
    assert err.startswith("train/sneaky.py:6: error[BE322]: the training opened "
                          "'data/items.parquet' directly"), err


@pytest.mark.parametrize("tool, table, message", [
    ('sandbox = "requird"', "", "sandbox: 'requird' is not one of 'required', 'preferred' "
     "or 'off'"),
    ("", '[tool.buildenv.trainings.fit.sandbox]\nnetwork = "allow"',
     'trainings.fit.sandbox: Value error, network = "allow" needs a `reason`: why the '
     "training must reach the network"),
    ("", '[tool.buildenv.trainings.fit]\nsandbox = "of"', "trainings.fit.sandbox.mode: 'of' "
     "is not one of 'required', 'preferred' or 'off'"),
])
def test_a_bad_policy_is_a_configuration_error_at_its_line(tmp_path, tool, table, message):
    root = make_sandbox_repo(tmp_path, {"fit": FIT}, tool=tool)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    if table.startswith("[tool.buildenv.trainings.fit]\n"):
        text = text.replace('entry = "train/fit.py:train"\n',
                            'entry = "train/fit.py:train"\n' + table.split("\n", 1)[1] + "\n")
    elif table:
        text += "\n" + table + "\n"
    pyproject.write_text(text)
    wanted = (tool or table.splitlines()[-1] if "sandbox =" in (tool + table)
              else table.splitlines()[0])
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t == wanted)
    code, out, err = invoke_cli(["build", "fit", "--env", "open"], root)
    assert code == 2
    assert err.splitlines()[0].startswith(f"pyproject.toml:{line}"), err
    assert f"error[BE016]: {message}" in err


def test_the_network_is_never_allowed_next_to_restricted_data(tmp_path):
    root = make_sandbox_repo(tmp_path, {"fit": FIT})
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.buildenv.trainings.fit.sandbox]\n'
                         'network = "allow"\nreason = "fetches a vocabulary"\n')
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = invoke_cli(["build", "fit", "--env", "secret"], root)
    assert code == 2
    assert re.match(r"pyproject\.toml:\d+: error\[BE325\]: training 'fit' asks for the "
                    r"network, and environment secret restricts people", err), err


@pytest.mark.slow
def test_network_allow_reaches_the_host(tmp_path, needs_bwrap):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        root = make_sandbox_repo(tmp_path, {"net": NETWORK}, port=server.getsockname()[1])
        pyproject = root / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + '\n[tool.buildenv.trainings.net.sandbox]\n'
                             'network = "allow"\nreason = "talks to the test server"\n')
        assert invoke_cli(["lock"], root)[0] == 0
        code, out, err = _build(root, "net")
        assert code == 0, err
        server.settimeout(5)
        server.accept()[0].close()  # its connection is waiting
    assert _lineage(root, "net", "open")["isolation"] == {
        "data": "handed-over descriptors", "mechanism": "bwrap+landlock", "network": "allow",
        "network_reason": "talks to the test server", "policy": "preferred"}


READ_EXTRA = ('''\
    from train.common import fit


    def train(ctx):
        assert open("{home}/weights.txt").read() == "w"
        return fit(ctx)
    ''', ["open"])


@pytest.mark.slow
def test_extra_read_only_paths_are_readable_but_never_uncover_data(tmp_path, needs_bwrap):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "weights.txt").write_text("w")
    root = make_sandbox_repo(tmp_path / "repo", {"extra": READ_EXTRA}, home=extra)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.buildenv.trainings.extra.sandbox]\n'
                         f'read_only = ["{extra}", "data"]\n')
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "extra")
    assert code == 0, err
    assert _lineage(root, "extra", "open")["isolation"]["read_only"] == [str(extra), "data"]
    (root / "train" / "extra.py").write_text(
        "def train(ctx):\n    return open('data/items.parquet', 'rb').read()\n")
    code, out, err = _build(root, "extra")
    assert code == 1 and "error[BE322]: the training opened 'data/items.parquet'" in err, err
    pyproject.write_text(pyproject.read_text().replace(f'"{extra}", ', '"missing/dir", '))
    code, out, err = _build(root, "extra")
    assert code == 2
    assert "error[BE325]: [tool.buildenv.trainings.extra] sandbox.read_only: 'missing/dir' " \
        "does not exist" in err


@pytest.mark.slow
def test_the_policy_is_part_of_the_cache_key(tmp_path):
    root = make_sandbox_repo(tmp_path, {"fit": FIT})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "fit")
    assert code == 0 and "built (not built before)" in out, err
    first = _lineage(root, "fit", "open")
    assert first["cache_parts"]["sandbox"] == {"mode": "preferred", "network": "none",
                                               "read_only": []}
    model = _model_files(root / "dist" / "fit" / "open")
    assert _build(root, "fit")[1].startswith("fit @ open: cached (up to date)")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('environments_dir = "environments"',
                                                       'environments_dir = "environments"\n'
                                                       'sandbox = "required"'))
    code, out, err = _build(root, "fit")
    assert code == 0 and "built (sandbox policy changed)" in out, err
    second = _lineage(root, "fit", "open")
    assert second["cache_key"] != first["cache_key"]
    assert _model_files(root / "dist" / "fit" / "open") == model  # the records say what applied
    card = (root / "dist" / "fit" / "open" / "model_card.md").read_text()
    assert f"sandbox `{second['isolation']['mechanism']}` (policy `required`)" in card, card


def _model_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name not in ("buildenv.json", "model_card.md", "model_card.json")}


@pytest.mark.slow
def test_a_denied_path_built_from_restricted_values_is_not_shown(tmp_path, needs_bwrap):
    root = make_sandbox_repo(tmp_path, {"redact": REDACT})
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = _build(root, "redact", "secret")
    assert code == 1
    assert err.splitlines()[0] == (
        "train/redact.py:7: error[BE322]: the training opened 'data' directly: the sandbox "
        "hides dataset files, label exports, locks and buildenv's state")
    assert SENTINEL not in out + err
    for path in root.rglob("*"):
        # the data's own bytes: its parquet file and the object store's copy of it
        if path.is_file() and path.suffix != ".parquet" and \
                not path.is_relative_to(root / ".buildenv" / "objects"):
            assert SENTINEL.encode() not in path.read_bytes(), path


def test_doctor_says_what_this_machine_offers(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")  # a project (BE040 outside)
    code, out, err = invoke_cli(["doctor"], tmp_path)
    support = detect()
    assert code == (0 if support.mechanism != "none" else 1), err
    assert out.splitlines()[0] == f"sandbox: {support.mechanism}"
    assert "policy: preferred (the default); environments with restricted datasets require " \
        "the sandbox" in out
    code, out, err = invoke_cli(["doctor", "--format", "json"], tmp_path,
                                env={"BUILDENV_SANDBOX_MECHANISM": "none"})
    assert code == 1
    data = json.loads(out)
    assert data["sandbox"]["mechanism"] == "none" and data["policy"] == "preferred"
    assert data["sandbox"]["bwrap_problem"] == "not used (BUILDENV_SANDBOX_MECHANISM=none)"
    code, out, err = invoke_cli(["doctor"], tmp_path,
                                env={"BUILDENV_SANDBOX_MECHANISM": "bwrapp"})
    assert (code, err.splitlines()[0]) == (2, "buildenv: error[BE004]: "
                                           "BUILDENV_SANDBOX_MECHANISM must be one of auto, "
                                           "landlock, none, not 'bwrapp'")
