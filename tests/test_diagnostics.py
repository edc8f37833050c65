"""Diagnostics as values and their renderings: text, JSON and SARIF 2.1.0 (SPEC §5)."""

from __future__ import annotations

import json

import pytest
from conftest import invoke_cli, write_repo

from buildenv.core.codes import CODES
from buildenv.core.diagnostics import (
    Diagnostic,
    DiagnosticError,
    Severity,
    did_you_mean,
    render,
    sort_diagnostics,
    to_sarif,
)

D_COL = Diagnostic("BE102", "column 'critic_scores' is not in dataset 'movies' of environment "
                   "prod-2026-06", "examples/movies/train.py", 7, 5,
                   hints=("did you mean 'critic_score'?",))
D_WARN = Diagnostic("BE105", "ctx.read with a non-literal dataset name cannot be checked "
                    "statically", "train/x.py", 3, 9, Severity.WARNING)
D_NOLOC = Diagnostic("BE014", "unknown environment 'nope'", hints=("a", "b"))
D_LINE = Diagnostic("BE052", "lock pins dataset 'x'", "environments/e.lock.json", 4)
D_FILE = Diagnostic("BE054", "invalid lock file", "environments/e.lock.json")


# --- text -------------------------------------------------------------------------------

def test_text_matches_the_spec_example_exactly():
    assert D_COL.to_text() == (
        "examples/movies/train.py:7:5: error[BE102]: column 'critic_scores' is not in dataset "
        "'movies' of environment prod-2026-06\n"
        "  hint: did you mean 'critic_score'?")


@pytest.mark.parametrize("diag, head", [
    (D_WARN, "train/x.py:3:9: warning[BE105]: ctx.read with a non-literal dataset name cannot "
             "be checked statically"),
    (D_NOLOC, "buildenv: error[BE014]: unknown environment 'nope'"),
    (D_LINE, "environments/e.lock.json:4: error[BE052]: lock pins dataset 'x'"),
    (D_FILE, "environments/e.lock.json: error[BE054]: invalid lock file"),
    (Diagnostic("BE001", "m", "f.yaml", None, 3), "f.yaml: error[BE001]: m"),
    (Diagnostic("BE001", "m", "f.yaml", 1, 1, Severity.NOTE), "f.yaml:1:1: note[BE001]: m"),
])
def test_text_locations_and_severities(diag, head):
    assert diag.to_text().splitlines()[0] == head


def test_every_hint_gets_its_own_line():
    assert D_NOLOC.to_text().splitlines()[1:] == ["  hint: a", "  hint: b"]
    assert D_WARN.to_text().count("\n") == 0


def test_with_hint_appends_and_skips_empty():
    d = D_WARN.with_hint("one", "", None, "two")  # type: ignore[arg-type]
    assert d.hints == ("one", "two")
    assert D_WARN.hints == ()  # immutable value
    assert d.severity is Severity.WARNING and d.code == "BE105"


def test_render_text_is_one_block_per_diagnostic():
    assert render([D_COL, D_NOLOC]) == D_COL.to_text() + "\n" + D_NOLOC.to_text()
    assert render([]) == ""


# --- sorting and collecting -----------------------------------------------------------------

def test_sorted_by_file_line_col_and_deduplicated():
    a1 = Diagnostic("BE003", "x", "a.yaml", 10, 1)
    a2 = Diagnostic("BE003", "x", "a.yaml", 2, 5)
    a3 = Diagnostic("BE003", "x", "a.yaml", 2, 3)
    b1 = Diagnostic("BE001", "x", "b.yaml", 1, 1)
    assert sort_diagnostics([b1, a1, a2, a3, a1, D_NOLOC]) == [D_NOLOC, a3, a2, a1, b1]


def test_diagnostic_error_sorts_and_carries_exit_code():
    a = Diagnostic("BE003", "x", "b.yaml", 1, 1)
    b = Diagnostic("BE003", "y", "a.yaml", 9, 1)
    exc = DiagnosticError([a, b, a], exit_code=2)
    assert exc.diagnostics == [b, a]
    assert exc.exit_code == 2
    assert str(exc) == "a.yaml:9:1: error[BE003]: y\nb.yaml:1:1: error[BE003]: x"
    assert DiagnosticError([a]).exit_code == 1


def test_did_you_mean():
    assert did_you_mean("critic_scores", ["critic_score", "genre"]) == \
        "did you mean 'critic_score'?"
    assert did_you_mean("zzz", ["critic_score", "genre"]) is None
    assert did_you_mean("x", []) is None


def test_is_error():
    assert D_COL.is_error and not D_WARN.is_error


# --- JSON -------------------------------------------------------------------------------------

def test_json_rendering():
    payload = json.loads(render([D_COL, D_WARN], "json"))
    assert payload == {"diagnostics": [
        {"code": "BE102", "message": D_COL.message, "path": "examples/movies/train.py",
         "line": 7, "col": 5, "severity": "error", "hints": ["did you mean 'critic_score'?"]},
        {"code": "BE105", "message": D_WARN.message, "path": "train/x.py", "line": 3, "col": 9,
         "severity": "warning", "hints": []},
    ]}
    assert json.loads(render([], "json")) == {"diagnostics": []}


@pytest.mark.parametrize("diag", [D_COL, D_WARN, D_NOLOC, D_LINE, D_FILE])
def test_json_round_trip(diag):
    assert Diagnostic.from_json(json.loads(json.dumps(diag.to_json()))) == diag


# --- SARIF 2.1.0 ----------------------------------------------------------------------------

def assert_valid_sarif(log: dict) -> None:
    """A structural check of SARIF 2.1.0 (the official JSON schema is not available offline)."""
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "buildenv" and driver["version"]
    rules = driver["rules"]
    ids = [r["id"] for r in rules]
    assert ids == sorted(set(ids))
    for rule in rules:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
    assert isinstance(run["results"], list)
    for result in run["results"]:
        assert result["ruleId"] in ids
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note", "none")
        assert isinstance(result["message"]["text"], str) and result["message"]["text"]
        for location in result.get("locations", []):
            physical = location["physicalLocation"]
            assert physical["artifactLocation"]["uri"]
            region = physical.get("region", {})
            assert region.get("startLine", 1) >= 1 and region.get("startColumn", 1) >= 1
            if "startColumn" in region:
                assert "startLine" in region


def test_sarif_structure_and_content():
    log = json.loads(render([D_COL, D_WARN, D_NOLOC, D_LINE], "sarif"))
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["BE014", "BE052", "BE102",
                                                                 "BE105"]
    rule = run["tool"]["driver"]["rules"][2]
    assert rule["shortDescription"]["text"] == CODES["BE102"].title
    assert rule["fullDescription"]["text"] == CODES["BE102"].explanation
    first, warn, noloc, line_only = run["results"]
    assert first == {
        "ruleId": "BE102", "ruleIndex": 2, "level": "error",
        "message": {"text": D_COL.message + "\nhint: did you mean 'critic_score'?"},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": "examples/movies/train.py"},
            "region": {"startLine": 7, "startColumn": 5}}}],
    }
    assert warn["level"] == "warning"
    assert "locations" not in noloc
    assert line_only["locations"][0]["physicalLocation"]["region"] == {"startLine": 4}


def test_sarif_of_nothing_is_still_a_valid_log():
    log = to_sarif([])
    assert_valid_sarif(log)
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []


def test_sarif_for_an_unregistered_code_does_not_crash():
    log = to_sarif([Diagnostic("BE999", "m", "f", 1, 1)])
    assert_valid_sarif(log)


# --- the same diagnostics through the CLI ------------------------------------------------------

BROKEN_CHILD = {"child": "name: child\nextends: base\ndescripton: typo\n"}


def test_cli_formats_carry_the_same_diagnostics(tmp_path):
    root = write_repo(tmp_path, envs=BROKEN_CHILD)
    code, out, err = invoke_cli(["lock", "--check", "child"], root)
    assert (code, out) == (2, "")
    assert err == ("environments/child.yaml:3:1: error[BE003]: unknown key 'descripton'\n"
                   "  hint: did you mean 'description'?\n")

    code, out, err = invoke_cli(["lock", "--check", "child", "--format", "json"], root)
    assert (code, err) == (2, "")
    assert json.loads(out) == {"diagnostics": [{
        "code": "BE003", "message": "unknown key 'descripton'", "path": "environments/child.yaml",
        "line": 3, "col": 1, "severity": "error", "hints": ["did you mean 'description'?"]}]}

    code, out, err = invoke_cli(["lock", "--check", "child", "--format", "sarif"], root)
    assert (code, err) == (2, "")
    log = json.loads(out)
    assert_valid_sarif(log)
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == "BE003"
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 3,
                                                                    "startColumn": 1}


def test_cli_json_on_success_is_an_empty_list(tmp_path):
    root = write_repo(tmp_path, lock=True)
    code, out, err = invoke_cli(["lock", "--check", "--format", "json"], root)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"diagnostics": []}
