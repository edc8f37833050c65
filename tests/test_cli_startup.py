"""`buildenv COMMAND` registers only that command with typer (issue 25 start-up): the same help,
errors and exit codes as the whole application, the other command modules not imported, and
`buildenv --help` in the pipeline's order whatever was imported first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, write_repo
from typer.testing import CliRunner

import buildenv.cli as cli


def test_each_command_is_registered_by_the_module_named_for_it():
    app = cli._commands()
    homes = {info.name: info.callback.__module__.rsplit(".", 1)[1]
             for info in app.registered_commands if info.callback is not None}
    assert homes == cli._HOMES
    assert [m for m in cli._MODULES if m in homes.values()] == \
        list(dict.fromkeys(homes[info.name] for info in app.registered_commands))


def _invoke(app, argv: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, argv, prog_name="buildenv", env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", sorted(cli._HOMES))
def test_a_command_alone_helps_and_refuses_as_in_the_whole_application(name):
    for argv in ([name, "--help"], [name, "--no-such-option"]):
        alone, whole = _invoke(cli._command(argv), argv), _invoke(cli._commands(), argv)
        assert alone == whole, argv
        assert alone[0] == (0 if argv[1] == "--help" else 2)


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["lok"], ["import", "--help"]])
def test_anything_but_a_command_name_gets_the_whole_application(argv):
    app = cli._command(argv)
    assert app is cli._commands()


_PROBE = """
import sys
sys.argv = ["buildenv", *sys.argv[1:]]
from buildenv.cli import main
try:
    main()
except SystemExit:
    pass
loaded = sorted(m.rsplit(".", 1)[1] for m in sys.modules
                if m.startswith("buildenv.cli.") and m.endswith("_commands"))
print("LOADED", " ".join(loaded), file=sys.stderr)
import buildenv.cli as cli
print("ORDER", " ".join(i.name for i in cli._commands().registered_commands), file=sys.stderr)
"""


def test_a_command_imports_only_its_module_and_help_keeps_its_order(tmp_path):
    root = write_repo(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k != "BUILDENV_ROOT"}
    env.update(PYTHONPATH=str(REPO_ROOT), BUILDENV_NO_QUICK_LOCK="1")
    proc = subprocess.run([sys.executable, "-c", _PROBE, "lock", "base"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "base: updated" in proc.stdout
    lines = dict(line.split(" ", 1) for line in proc.stderr.splitlines()
                 if line.startswith(("LOADED", "ORDER")))
    assert lines["LOADED"] == "data_commands"
    assert lines["ORDER"].split() == [name for name in sorted(
        cli._HOMES, key=lambda n: (cli._MODULES.index(cli._HOMES[n]),
                                   [i.name for i in cli._commands().registered_commands].index(n)))]


def test_diagnostics_import_the_codes_table_and_difflib_only_when_used():
    """Every command imports `core.diagnostics`; the 268 codes and difflib (~5 ms) wait for
    SARIF or a "did you mean", which still find them."""
    probe = ("import sys\nimport buildenv.core.diagnostics as d\n"
             "before = [m in sys.modules for m in ('buildenv.core.codes', 'difflib')]\n"
             "sarif = d.to_sarif([d.Diagnostic('BE002', 'dup', 'e.yaml')])\n"
             "print(before, sarif['runs'][0]['tool']['driver']['rules'][0]['name'],"
             " d.did_you_mean('nmae', ['name']))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[False,", "False]", "duplicate", "key", "did", "you",
                                   "mean", "'name'?"]
