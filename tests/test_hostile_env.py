"""Hostile environment files (anyone can open a pull request): refused fast, exit 2, no crash.

An alias bomb, an oversized file, deep nesting and unsupported tags each get their own
diagnostic; then hypothesis throws mutated and arbitrary documents at `buildenv show` and
`buildenv build`, which must answer 0 or 2 with diagnostics — never a traceback or a hang.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import BASE_YAML, REPO_ROOT, invoke_cli, write_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOMB = "\n".join(
    ["name: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"


def cli_subprocess(repo, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`python -m buildenv` with a hard time limit: a hang fails the test instead of CI."""
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_alias_bomb_is_refused_at_once(repo):
    write_env(repo, "bomb", BOMB)
    code, out, err = cli_subprocess(repo, "show", "bomb", timeout=30)  # was: over a minute
    assert code == 2, err
    assert ("environments/bomb.yaml:7:10: error[BE031]: the document expands to more than "
            "100000 values") in err
    assert "anchors and aliases (&a / *a) count once per use" in err
    code, out, err = cli_subprocess(repo, "build", "demo", "--env", "bomb", timeout=30)
    assert code == 2 and "error[BE031]" in err


def test_value_limit_can_be_raised_for_trusted_files(repo, monkeypatch):
    write_env(repo, "many", "name: many\nextra: &x [1, 2, 3, 4]\nmore: [*x, *x, *x]\n")
    monkeypatch.setenv("BUILDENV_MAX_ENV_VALUES", "10")
    code, _, err = invoke_cli(["show", "many"], repo)
    assert code == 2 and "error[BE031]: the document expands to more than 10 values" in err
    monkeypatch.setenv("BUILDENV_MAX_ENV_VALUES", "1000")
    code, _, err = invoke_cli(["show", "many"], repo)
    assert code == 2 and "BE031" not in err and "error[BE003]" in err  # on to the schema


def test_oversized_file_is_refused_before_reading(repo, monkeypatch):
    write_env(repo, "huge", "name: huge\ndescription: " + "x" * 300_000 + "\n")
    code, _, err = invoke_cli(["show", "huge"], repo)
    assert code == 2
    assert ("environments/huge.yaml: error[BE030]: environment file is 300025 bytes; the "
            "limit is 262144") in err
    monkeypatch.setenv("BUILDENV_MAX_ENV_BYTES", "400000")
    code, _, err = invoke_cli(["show", "huge"], repo)
    assert code == 2 and "BE030" not in err


def test_deep_nesting_is_refused(repo):
    write_env(repo, "deep", "name: deep\ndescription: " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = invoke_cli(["show", "deep"], repo)
    assert code == 2
    assert "error[BE032]: YAML nesting is deeper than 64 levels" in err


@pytest.mark.parametrize("value, problem", [
    ("!!python/object/apply:os.system ['touch pwned']", "tag tag:yaml.org,2002:python/"),
    ("!!python/name:os.system", "could not determine a constructor"),
    ("!!set {a, b}", "tag tag:yaml.org,2002:set"),
    ("1" + "0" * 5000, "Exceeds the limit"),
])
def test_unsupported_values_are_diagnostics_not_crashes(repo, value, problem):
    write_env(repo, "tagged", f"name: tagged\ndescription: {value}\n")
    code, _, err = invoke_cli(["show", "tagged"], repo)
    assert code == 2, err
    assert "environments/tagged.yaml:2:14: error[BE033]: unsupported YAML value" in err
    assert problem in err
    assert not (repo / "pwned").exists()


def test_control_characters_are_located_not_crashes(repo):
    write_env(repo, "ctl", "name: ctl\ndescription: a\x1fb\n")
    code, _, err = invoke_cli(["show", "ctl"], repo)
    assert code == 2
    assert "environments/ctl.yaml:2:15: error[BE001]: invalid YAML: unacceptable character " \
        "#x001f" in err


def test_build_exits_2_for_an_invalid_environment_file(repo):
    write_env(repo, "broken", "name: broken\nextends: base\nservng: {}\n")
    code, out, err = invoke_cli(["build", "demo", "--env", "broken"], repo)
    assert code == 2, out + err  # a configuration error, like every other command (was 1)
    assert "environments/broken.yaml:3:1: error[BE003]: unknown key 'servng'" in err
    code, out, err = invoke_cli(["build", "--all", "--no-register"], repo)
    assert code == 1 and "BE003" in out + err  # the other pairs still build; this one fails


# --- fuzzing ------------------------------------------------------------------------------

FRAGMENTS = ["&a ", "*a", "&b [*a, *a, *a, *a]", "*b", "[", "]", "{", "}", ": ", "- ", ",",
             "!!str ", "!!python/tuple ", "!!binary ", "? ", "<<: ", "'", '"', "#", "\t",
             "\n", "\n  ", "\n    ", "~", "null", "1e999", "0x1F", "-.inf", ".nan", "2026-01-01",
             "|\n  text", ">-\n  folded", "%YAML 1.1\n---\n", "---\n", "...\n", "\x00", "\ufeff",
             "datasets", "columns", "dtype", "extends: base", "name: fuzz", "uri: ../../x"]


def mutate(lines: list[str], edits: list[tuple[int, int, str]]) -> str:
    out = list(lines)
    for line, col, fragment in edits:
        i = line % len(out)
        j = col % (len(out[i]) + 1)
        out[i] = out[i][:j] + fragment + out[i][j:]
    return "\n".join(out)


BASE_LINES = BASE_YAML.replace("name: base", "name: fuzz").splitlines()
edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 80), st.sampled_from(FRAGMENTS)),
                 min_size=1, max_size=8)
documents = st.one_of(
    edits.map(lambda e: mutate(BASE_LINES, e)),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(lambda parts: "name: fuzz\n"
                                                          + "".join(parts)),
    st.text(max_size=300),
)
fuzz_settings = settings(max_examples=150, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


@fuzz_settings
@given(document=documents)
def test_fuzzed_environment_files_never_crash_show(repo, document):
    (repo / "environments" / "fuzz.yaml").write_bytes(document.encode("utf-8", "replace"))
    code, out, err = invoke_cli(["show", "fuzz"], repo)
    assert code in (0, 2), (document, out, err)
    assert "internal error" not in err and "Traceback" not in err
    if code == 2:
        assert "error[BE" in err, err


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=edits.map(lambda e: mutate(BASE_LINES, e)))
def test_fuzzed_environment_files_never_crash_check(repo, document):
    (repo / "environments" / "fuzz.yaml").write_bytes(document.encode("utf-8", "replace"))
    code, out, err = invoke_cli(["check", "demo", "--env", "fuzz"], repo)
    assert code in (0, 1, 2), (document, out, err)
    assert "internal error" not in err and "Traceback" not in err


PARSER_CASES = [
    BASE_YAML,  # valid: every key's and value's position
    BOMB,  # BE031 at the event that crosses the limit
    "name: deep\nx: " + "[" * 70 + "]" * 70 + "\n",  # BE032
    "name: dup\na: 1\na: 2\n",  # BE002
    "name: bad\na: [1, 2\n",  # invalid YAML (BE001), worded by the pure-Python parser
    "name: tab\na:\n\t- 1\n",
    "name: ctl\na: \"x\x07y\"\n",  # a control character
    "name: merge\nbase: &b {x: 1}\nother:\n  <<: *b\n",
    "name: tag\na: !!python/object:os.system ls\n",
]


@pytest.mark.parametrize("text", PARSER_CASES)
def test_libyaml_and_the_pure_python_parser_give_the_same_result(tmp_path, monkeypatch, text):
    """Environment files are parsed by libyaml for speed; what a user sees -- values, positions,
    diagnostics -- must be exactly what the pure-Python parser gives."""
    import yaml

    from buildenv.core.diagnostics import DiagnosticError
    from buildenv.env import loader

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml: only the pure-Python parser runs")
    path = tmp_path / "env.yaml"
    path.write_text(text, encoding="utf-8")

    def outcome() -> object:
        try:
            found = loader.load_yaml(path, "environments/env.yaml")
        except DiagnosticError as exc:
            return ("refused", [d.to_json() for d in exc.diagnostics])
        return (found.data, found.keys, found.values, [d.to_json() for d in found.problems])

    fast = outcome()
    monkeypatch.setattr(loader, "_FAST", None)
    assert outcome() == fast
