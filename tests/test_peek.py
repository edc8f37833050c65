"""`buildenv peek`: real rows only with a reason, only to allowed actors, recorded before they
are printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from access_repo import SENTINEL, write_access_repo
from conftest import invoke_cli

from buildenv.data.gate.audit import AuditLog

STEWARD = {"BUILDENV_ACTOR": "steward"}


@pytest.fixture
def repo(tmp_path) -> Path:
    root = write_access_repo(tmp_path / "repo", rows=300)
    assert invoke_cli(["lock"], root)[0] == 0
    return root


def peek(root: Path, *args: str, actor: str = "steward",
         env: dict | None = None) -> tuple[int, str, str]:
    return invoke_cli(["peek", "people", "--dataset", "people", *args], root,
                      env={"BUILDENV_ACTOR": actor, **(env or {})})


def records(root: Path) -> list[dict]:
    return AuditLog(root / ".buildenv").records()


def test_an_allowed_actor_with_a_reason_sees_rows_and_the_access_is_recorded(repo):
    code, out, err = peek(repo, "--rows", "3", "--columns", "person_id,age",
                          "--reason", "INC-42: ages look off")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0].split() == ["person_id", "age"] and len(lines) == 5
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    assert lines[-1] == "(3 row(s) shown; the access is in the audit log)"
    shown = [r for r in records(repo) if r["details"].get("outcome") == "shown"]
    assert len(shown) == 1
    record = shown[0]
    assert (record["actor"], record["purpose"], record["rows"], record["columns"]) == \
        ("steward", "peek", 3, ["age", "person_id"])
    assert record["details"]["reason"] == "INC-42: ages look off"
    assert record["digest"].startswith("sha256:")
    assert invoke_cli(["audit", "--verify"], repo)[0] == 0


def test_the_declared_actor_and_the_os_user_are_both_recorded(repo):
    """BUILDENV_ACTOR is a declaration anyone can make (here with USER set to match it): the
    log also holds the account the process ran as, from its user id."""
    import pwd

    real = pwd.getpwuid(os.geteuid()).pw_name
    code, _, err = peek(repo, "--rows", "1", "--reason", "INC-7", actor="steward",
                        env={"USER": "steward", "LOGNAME": "steward"})
    assert code == 0, err
    record = [r for r in records(repo) if r["details"].get("outcome") == "shown"][-1]
    assert (record["actor"], record["os_user"]) == ("steward", real)
    code, out, _ = invoke_cli(["audit"], repo)
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["SEQ", "TIME", "ACTOR", "OS", "USER"]
    assert rows[-1].split()[2:4] == ["steward", real]


def test_the_record_is_written_before_anything_is_printed(repo, monkeypatch):
    printed_when_recorded: list[str] = []
    original = AuditLog.append

    def spy(self, **kwargs):
        sys.stdout.flush()
        printed_when_recorded.append(sys.stdout.buffer.getvalue().decode())
        return original(self, **kwargs)

    monkeypatch.setattr(AuditLog, "append", spy)
    code, out, err = peek(repo, "--rows", "2", "--reason", "check")
    assert code == 0, err
    assert out.count("\n") == 4 and printed_when_recorded == ["", ""]  # gate read, then peek


def test_nothing_is_printed_when_the_access_cannot_be_recorded(repo):
    assert peek(repo, "--rows", "1", "--reason", "first")[0] == 0
    log = repo / ".buildenv" / "audit" / "log.jsonl"
    log.write_text(log.read_text().replace('"rows": 1', '"rows": 0'))  # tampered with
    code, out, err = peek(repo, "--rows", "1", "--reason", "second")
    assert (code, out) == (1, "")
    assert "error[BE801]" in err


def test_an_actor_not_allowed_is_refused_and_the_attempt_recorded(repo):
    code, out, err = peek(repo, "--rows", "1", "--reason", "curious", actor="mallory")
    assert (code, out) == (1, "")
    assert "error[BE817]: actor 'mallory' may not peek at restricted dataset 'people' in people " \
        "(privacy.peek.actors: steward); the attempt was recorded in the audit log" in err
    assert "hint: learn about the data without seeing it: `buildenv stats`" in err
    assert [(r["actor"], r["rows"], r["details"]["outcome"]) for r in records(repo)] == [
        ("mallory", 0, "refused: actor 'mallory' not in privacy.peek.actors")]


@pytest.mark.parametrize("args, code, message", [
    (["--rows", "2"], "BE816", "peek needs a reason"),
    (["--rows", "2", "--reason", "   "], "BE816", "peek needs a reason"),
    (["--rows", "0", "--reason", "x"], "BE815", "--rows must be at least 1 (got 0)"),
    (["--rows", "2", "--reason", "x", "--columns", "nope"], "BE010", "unknown column 'nope'"),
])
def test_bad_input(repo, args, code, message):
    exit_code, out, err = peek(repo, *args)
    assert (exit_code, out) == (2, "")
    assert f"error[{code}]: {message}" in err, err
    assert records(repo) == []


def test_invalid_shows_the_rows_that_break_the_declaration(repo):
    """What a person debugging BE204 (values not shown) needs, and validate's hint names."""
    code, _, err = invoke_cli(["validate", "people"], repo)
    assert code == 1
    assert "hint: values are never printed; a person allowed by privacy.peek can look, " \
        "audited: `buildenv peek ENV --dataset people --rows 10 --invalid country" in err
    assert SENTINEL not in err
    code, out, err = peek(repo, "--rows", "10", "--invalid", "country", "--columns",
                          "person_id,country", "--reason", "BE204 in country", "--format",
                          "json")
    assert code == 0, err
    assert json.loads(out)["rows"] == [{"person_id": 152, "country": SENTINEL}]


def test_a_directory_of_files_is_peeked_at_against_its_manifest(tmp_path):
    """A restricted dataset may be a directory of Parquet files (no partitions): its lock entry
    is a manifest, which the read is verified against file by file."""
    root = write_access_repo(tmp_path / "repo", rows=300)
    (root / "data" / "people").mkdir()
    (root / "data" / "people.parquet").rename(root / "data" / "people" / "part-0.parquet")
    env = root / "environments" / "people.yaml"
    env.write_text(env.read_text().replace("uri: data/people.parquet", "uri: data/people/"))
    code, _, err = invoke_cli(["lock", "people"], root)
    assert code == 0, err
    code, out, err = peek(root, "--rows", "2", "--columns", "person_id",
                          "--reason", "INC-9: a directory")
    assert (code, err) == (0, ""), err
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["1", "2"]
