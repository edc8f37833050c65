"""The environment commands as users run them: `envs`, `show`, `schema`, `version`, exit codes."""

from __future__ import annotations

import json

import pytest
from conftest import invoke_cli, movies_table, write_env, write_parquet, write_repo


@pytest.fixture
def multiverse(tmp_path):
    """One environment in each lock state."""
    root = write_repo(tmp_path, lock=True, envs={
        "stale": "name: stale\nextends: base\ndatasets:\n  movies:\n"
                 "    uri: data/movies-v2.parquet\n"})
    write_env(root, "stale", "name: stale\nextends: base\n")          # uri changed since lock
    write_parquet(root / "data" / "movies-v2.parquet", movies_table(11))  # child's data changed
    write_env(root, "nolock", "name: nolock\nextends: child\n")
    write_env(root, "badlock", "name: badlock\nextends: base\n")
    (root / "environments" / "badlock.lock.json").write_text("{")
    return root


def test_envs_table(repo):
    invoke_cli(["lock", "base"], repo)
    code, out, err = invoke_cli(["envs"], repo)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "NAME   EXTENDS  LOCK      DATASETS",
        "base   -        locked    movies, ratings",
        "child  base     missing   movies, ratings",
    ]


def test_envs_lock_states(multiverse):
    code, out, err = invoke_cli(["envs"], multiverse)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "NAME     EXTENDS  LOCK      DATASETS",
        "badlock  base     invalid   movies, ratings",
        "base     -        locked    movies, ratings",
        "child    base     changed   movies, ratings",
        "nolock   child    missing   movies, ratings",
        "stale    base     stale     movies, ratings",
    ]


def test_envs_json(multiverse):
    code, out, err = invoke_cli(["envs", "--format", "json"], multiverse)
    assert (code, err) == (0, "")
    rows = json.loads(out)["environments"]
    assert [(r["name"], r["extends"], r["lock"]) for r in rows] == [
        ("badlock", "base", "invalid"), ("base", None, "locked"), ("child", "base", "changed"),
        ("nolock", "child", "missing"), ("stale", "base", "stale")]
    assert all(set(r) == {"name", "extends", "datasets", "lock", "serving"} for r in rows)
    assert rows[1]["datasets"] == ["movies", "ratings"] and rows[1]["serving"] == "sklearn"


def test_envs_lists_broken_environments_and_their_errors(tmp_path):
    root = write_repo(tmp_path, envs={"broken": "name: broken\nextends: base\nfoo: 1\n"})
    code, out, err = invoke_cli(["envs"], root)
    assert code == 2
    assert out.splitlines() == [
        "NAME    EXTENDS  LOCK      DATASETS",
        "base    -        missing   movies, ratings",
        "broken  base     invalid   ",  # what its file says: its parent, no datasets of its own
        "child   base     missing   movies, ratings",
    ]
    assert err.splitlines() == [
        "environments/broken.yaml:3:1: error[BE003]: unknown key 'foo'",
        "  hint: allowed keys: datasets, description, evaluation, extends, label, labels, monitoring, name, "
        "privacy, promotion, schema, serving",
    ]


def test_envs_without_environments(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    code, out, err = invoke_cli(["envs"], tmp_path)
    assert (code, out, err) == (0, "NAME  EXTENDS  LOCK      DATASETS\n", "")


def test_root_discovery_from_a_subdirectory_and_root_flag(repo, tmp_path_factory):
    sub = repo / "train"
    code, out, _ = invoke_cli(["show", "child", "--format", "json"], sub)
    assert code == 0 and json.loads(out)["name"] == "child"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    code, out, _ = invoke_cli(["show", "child", "--root", repo, "--format", "json"], elsewhere)
    assert code == 0 and json.loads(out)["name"] == "child"
    code, out, _ = invoke_cli(["show", "child", "--format", "json"], elsewhere,
                              env={"BUILDENV_ROOT": str(repo)})
    assert code == 0 and json.loads(out)["name"] == "child"


def test_custom_environments_dir(tmp_path):
    root = write_repo(tmp_path)
    (root / "environments").rename(root / "envs")
    pyproject = (root / "pyproject.toml").read_text().replace(
        'environments_dir = "environments"', 'environments_dir = "envs"')
    (root / "pyproject.toml").write_text(pyproject)
    code, out, err = invoke_cli(["show", "child", "--explain"], root)
    assert (code, err) == (0, "")
    assert "    uri: data/movies-v2.parquet  # envs/child.yaml:5" in out.splitlines()


def test_invalid_pyproject_is_be016(tmp_path):
    root = write_repo(tmp_path, files={"pyproject.toml": "[tool.buildenv]\nenvironment_dir = 1\n"})
    code, out, err = invoke_cli(["envs"], root)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["pyproject.toml:2:1: error[BE016]: unknown key 'environment_dir' "
                                "in [tool.buildenv]",
                                "  hint: did you mean 'environments_dir'?"]


def test_invalid_toml_is_be016(tmp_path):
    root = write_repo(tmp_path, files={"pyproject.toml": "[tool.buildenv\n"})
    code, _, err = invoke_cli(["envs"], root)
    assert code == 2
    assert err.startswith("pyproject.toml:1:")
    assert "error[BE016]: invalid TOML:" in err


# --- exit codes and usage --------------------------------------------------------------------

@pytest.mark.parametrize("args", [["envs", "--bogus"], ["show"], ["show", "base", "--format",
                                                                    "xml"], ["nonsense"]])
def test_usage_errors_exit_2(repo, args):
    code, out, err = invoke_cli(args, repo)
    assert code == 2
    assert "Usage: buildenv" in err


def test_no_arguments_shows_help(repo):
    code, out, err = invoke_cli([], repo)
    assert "Usage: buildenv [OPTIONS] COMMAND [ARGS]..." in out + err
    assert code in (0, 2)  # click prints help for a bare command; exit code varies by version


def test_version(repo):
    from buildenv import __version__

    assert invoke_cli(["version"], repo) == (0, f"{__version__}\n", "")


def test_internal_errors_exit_3_without_traceback(repo, monkeypatch):
    from buildenv.env import views as explain

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(explain, "resolved_document", boom)
    code, out, err = invoke_cli(["show", "base"], repo)
    assert (code, out) == (3, "")
    assert err.splitlines() == [
        "buildenv: internal error: RuntimeError: kaboom",
        "  hint: rerun with BUILDENV_DEBUG=1 for the traceback, and please report it",
    ]


def test_schema_command_prints_json(repo):
    code, out, err = invoke_cli(["schema"], repo)
    assert (code, err) == (0, "")
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"if", "then", "else", "$defs"} <= set(schema)


def test_python_dash_m_entry_point(repo):
    code, out, err = invoke_cli(["show", "nope"], repo, subprocess=True)
    assert (code, out) == (2, "")
    assert err == ("buildenv: error[BE014]: unknown environment 'nope'\n"
                   "  hint: `buildenv envs` lists the environments\n")
