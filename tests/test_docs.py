"""Everything users can type or read is documented: codes (`buildenv explain`) and commands."""

from __future__ import annotations

import re

import pytest
import typer.main
from conftest import REPO_ROOT, invoke_cli

from buildenv.cli import app
from buildenv.core.codes import CODES

SOURCES = sorted((REPO_ROOT / "buildenv").rglob("*.py"))
USED = sorted({code for path in SOURCES
               for code in re.findall(r"\bBE\d{3}\b", path.read_text(encoding="utf-8"))})


def _commands() -> dict:
    """name -> click command (typer vendors its own click, so no isinstance checks)."""
    return dict(typer.main.get_command(app).commands)


COMMANDS = sorted(_commands())


def test_sources_use_codes():
    assert len(SOURCES) > 10 and len(USED) > 30


@pytest.mark.parametrize("code", USED)
def test_every_used_code_is_documented(code):
    assert code in CODES, f"{code} is used in buildenv/ but has no entry in codes.CODES"
    entry = CODES[code]
    assert entry.title.strip() and entry.explanation.strip()
    assert len(entry.explanation) >= 30, "an explanation says what happened and what to do"


def test_codes_are_well_formed():
    assert all(re.fullmatch(r"BE\d{3}", code) for code in CODES)
    assert list(CODES) == sorted(CODES), "keep codes.CODES sorted"
    titles = [c.title for c in CODES.values()]
    assert all(t == t.strip() and not t.endswith(".") and len(t) <= 40 for t in titles)


@pytest.mark.parametrize("code", sorted(CODES))
def test_explain_every_code(code):
    code_, out, err = invoke_cli(["explain", code], REPO_ROOT)
    assert (code_, err) == (0, "")
    assert out == f"{code}: {CODES[code].title}\n\n{CODES[code].explanation}\n"


def test_explain_is_case_insensitive():
    assert invoke_cli(["explain", "be102"], REPO_ROOT) == invoke_cli(["explain", "BE102"],
                                                                      REPO_ROOT)


def test_explain_unknown_code():
    code, out, err = invoke_cli(["explain", "BE1022"], REPO_ROOT)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["buildenv: error[BE004]: unknown code 'BE1022'",
                                "  hint: did you mean 'BE102'?"]


def test_spec_commands_exist():
    spec_commands = {"envs", "show", "diff", "lock", "validate", "check", "build", "schema",
                     "explain"}
    assert spec_commands <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    command = _commands()[name]
    assert command.help and command.help.strip(), f"`buildenv {name}` has no help text"
    assert command.get_short_help_str().strip()
    code, out, err = invoke_cli([name, "--help"], REPO_ROOT)
    assert code == 0, err
    assert f"Usage: buildenv {name}" in out
    assert command.help.strip().splitlines()[0][:30] in " ".join(out.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_argument_is_described(name):
    """Positional arguments have help (options are covered by their names and defaults)."""
    for param in _commands()[name].params:
        if param.param_type_name == "argument":
            assert getattr(param, "help", None), f"`buildenv {name}` argument {param.name}"
