"""The project a command works on: found or refused (BE040), `[tool.buildenv]` problems at the
line of their key, and `--version`."""

from __future__ import annotations

import pytest
from conftest import PYPROJECT, invoke_cli, write_repo

from buildenv import __version__
from buildenv.core.toml_keys import key_positions

NOT_A_PROJECT = ("buildenv: error[BE040]: not in a buildenv project: neither {here} nor a parent "
                 "directory holds a pyproject.toml with a [tool.buildenv] table or an "
                 "environments/ directory")


@pytest.mark.parametrize("args", [["envs"], ["build", "--all"], ["lock"], ["lock", "--check"],
                                  ["show", "prod"], ["audit", "--verify"],
                                  ["check", "demo", "--env", "prod"]])
def test_outside_a_project_every_command_refuses_with_exit_2(tmp_path, args):
    """A CI job run from the wrong directory fails instead of going green on nothing, and
    writes nothing."""
    code, out, err = invoke_cli(args, tmp_path)
    assert (code, out) == (2, "")
    assert err.splitlines() == [NOT_A_PROJECT.format(here=tmp_path.resolve()),
                                "  hint: run the command in the project (or pass --root DIR)",
                                "  hint: `buildenv init` makes this directory a project"]
    assert list(tmp_path.iterdir()) == []


def test_a_pyproject_without_a_buildenv_table_is_not_a_project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    code, _, err = invoke_cli(["envs"], tmp_path)
    assert code == 2 and "error[BE040]" in err


def test_the_project_is_found_from_a_subdirectory(tmp_path):
    root = write_repo(tmp_path / "repo")
    inner = root / "train" / "pkg"
    inner.mkdir(parents=True)
    # a nested pyproject.toml of another tool does not stop the search
    (inner / "pyproject.toml").write_text('[project]\nname = "pkg"\n')
    code, out, err = invoke_cli(["envs"], inner)
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[:2] == ["base", "-"]


def test_an_explicit_root_must_be_a_project(tmp_path):
    code, out, err = invoke_cli(["envs", "--root", str(tmp_path)], tmp_path)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == (f"buildenv: error[BE040]: --root {tmp_path.resolve()} is not "
                                   "a buildenv project: it holds no pyproject.toml with a "
                                   "[tool.buildenv] table and no environments/ directory")
    code, _, err = invoke_cli(["envs"], tmp_path, env={"BUILDENV_ROOT": str(tmp_path / "no")})
    assert code == 2
    assert err.splitlines()[0] == (f"buildenv: error[BE040]: BUILDENV_ROOT "
                                   f"{(tmp_path / 'no').resolve()}: no such directory")


def test_version_flag_and_command():
    assert invoke_cli(["--version"], ".") == (0, f"buildenv {__version__}\n", "")
    assert invoke_cli(["version"], ".") == (0, f"{__version__}\n", "")


# --- [tool.buildenv] diagnostics -----------------------------------------------------------

def pyproject_errors(tmp_path, text: str) -> list[str]:
    root = write_repo(tmp_path, files={"pyproject.toml": text})
    code, out, err = invoke_cli(["envs"], root)
    assert (code, out) == (2, "")
    return err.splitlines()


def test_a_typo_in_a_training_table_is_located_with_did_you_mean(tmp_path):
    text = PYPROJECT.replace('entry = "train/demo.py:train"',
                             'entri = "train/demo.py:train"')
    assert pyproject_errors(tmp_path, text) == [
        "pyproject.toml:8:1: error[BE016]: missing key 'entry' in [tool.buildenv.trainings.demo]",
        "pyproject.toml:9:1: error[BE016]: unknown key 'entri' in [tool.buildenv.trainings.demo]",
        "  hint: did you mean 'entry'?",
    ]


def test_keys_in_inline_tables_and_dotted_keys_are_located(tmp_path):
    text = ('[project]\nname = "x"\n\n[tool.buildenv]\nexecutor = "rey"\n'
            'trainings.demo = {entry = "train/demo.py:train", environmnets = ["*"]}\n'
            'trainings.other.seed = "seven"\ntrainings.other.entry = "o.py:train"\n')
    assert pyproject_errors(tmp_path, text) == [
        "pyproject.toml:5:1: error[BE016]: executor: 'rey' is not one of 'local' or 'ray'",
        "  hint: did you mean 'ray'?",
        "pyproject.toml:6:50: error[BE016]: unknown key 'environmnets' in "
        "[tool.buildenv.trainings.demo]",
        "  hint: did you mean 'environments'?",
        "pyproject.toml:7:1: error[BE016]: trainings.other.seed: Input should be a valid "
        "integer, unable to parse string as an integer",
    ]


def test_an_unknown_key_far_from_any_known_one_lists_the_allowed_keys(tmp_path):
    text = PYPROJECT.replace('[tool.buildenv]\n', '[tool.buildenv]\nzzz = 1\n')
    assert pyproject_errors(tmp_path, text) == [
        "pyproject.toml:6:1: error[BE016]: unknown key 'zzz' in [tool.buildenv]",
        "  hint: allowed keys: cache_dir, environments_dir, executor, sandbox, signing_key, "
        "store, toolchains, tracking_uri, trainings, verify_key",
    ]


def test_a_resources_table_says_what_it_takes(tmp_path):
    """`resources` takes cpus and memory_gb: a slip gets the key meant, and a GPU request
    is told apart from a misspelt `cpus`."""
    text = PYPROJECT.replace('entry = "train/demo.py:train"\n', 'entry = "train/demo.py:train"\n'
                             'resources = {cpus = 2, memory = 4, gpus = 1}\n')
    assert pyproject_errors(tmp_path, text) == [
        "pyproject.toml:10:24: error[BE016]: unknown key 'memory' in "
        "[tool.buildenv.trainings.demo.resources]",
        "  hint: did you mean 'memory_gb'?",
        "pyproject.toml:10:36: error[BE016]: unknown key 'gpus' in "
        "[tool.buildenv.trainings.demo.resources]",
        "  hint: a build asks Ray for CPUs and memory only (cpus, memory_gb); GPUs are not a "
        "resource it requests yet",
    ]


def test_key_positions_of_toml():
    text = ('# comment\n[tool.buildenv]\nexecutor = "ray"  # where\nlong = """\nentry = 1\n"""\n'
            'arr = [\n  "a", # ]\n  "b",\n]\n[tool.buildenv.trainings."my model"]\n'
            '"entry" = "a.py:f"\nx = {a = {b = 1}, "c d" = [1, {e = 2}]}\n')
    got = key_positions(text)
    assert got[("tool", "buildenv")] == (2, 1)
    assert got[("tool", "buildenv", "executor")] == (3, 1)
    assert ("entry",) not in got and ("tool", "buildenv", "entry") not in got  # in a string
    assert got[("tool", "buildenv", "arr")] == (7, 1)
    assert got[("tool", "buildenv", "trainings", "my model")] == (11, 1)
    assert got[("tool", "buildenv", "trainings", "my model", "entry")] == (12, 1)
    assert got[("tool", "buildenv", "trainings", "my model", "x", "a", "b")] == (13, 11)
    assert got[("tool", "buildenv", "trainings", "my model", "x", "c d")] == (13, 19)
