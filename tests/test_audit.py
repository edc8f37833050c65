"""The audit log: tamper-evident, append-only, safe with many writers at once."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from conftest import invoke_cli

from buildenv.core.diagnostics import DiagnosticError
from buildenv.data.gate.audit import AuditLog


def append(state: Path, n: int, who: int) -> None:
    log = AuditLog(state)
    for i in range(n):
        log.append(purpose="build", environment="e", dataset=f"d{who}", digest=f"sha256:{i}",
                   columns=["a", "b"], rows=i)


def fill(tmp_path: Path, n: int = 5) -> Path:
    """A project (an environments/ directory) whose audit log holds `n` records."""
    (tmp_path / "environments").mkdir(exist_ok=True)
    append(tmp_path / ".buildenv", n, 0)
    return tmp_path


def lines(root: Path) -> list[str]:
    return (root / ".buildenv" / "audit" / "log.jsonl").read_text().splitlines(keepends=True)


def verify(root: Path) -> tuple[int, str, str]:
    return invoke_cli(["audit", "--verify"], root)


def test_concurrent_writers_never_interleave_or_lose_records(tmp_path):
    (tmp_path / "environments").mkdir()
    state = tmp_path / ".buildenv"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append, args=(state, 40, who)) for who in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    records = AuditLog(state).records()
    assert len(records) == 240
    assert [r["seq"] for r in records] == list(range(1, 241))
    assert sorted((r["dataset"], r["rows"]) for r in records) == sorted(
        (f"d{who}", i) for who in range(6) for i in range(40))
    assert verify(tmp_path)[0] == 0


def test_an_intact_log_verifies(tmp_path):
    root = fill(tmp_path)
    code, out, err = verify(root)
    assert (code, err) == (0, "")
    assert out == "audit log .buildenv/audit/log.jsonl: 5 record(s), hash chain intact\n"


@pytest.mark.parametrize("tamper, line, reason", [
    ("edit", 3, "edited: its content does not match its hash"),
    ("remove", 3, "the chain is broken before it: a record was removed, inserted or reordered"),
    ("swap", 2, "the chain is broken before it: a record was removed, inserted or reordered"),
    ("truncate", 5, "missing: head.json records 5 records, the log holds 4 (records were cut "
                    "off the end)"),
])
def test_tampering_is_found_at_the_first_bad_record(tmp_path, tamper, line, reason):
    root = fill(tmp_path)
    content = lines(root)
    if tamper == "edit":
        record = json.loads(content[2])
        record["rows"] = 999
        content[2] = json.dumps(record, sort_keys=True) + "\n"
    elif tamper == "remove":
        del content[2]
    elif tamper == "swap":
        content[1], content[2] = content[2], content[1]
    else:
        content = content[:-1]
    (root / ".buildenv" / "audit" / "log.jsonl").write_text("".join(content))
    code, out, err = verify(root)
    assert (code, out) == (1, "")
    assert err.startswith(f".buildenv/audit/log.jsonl:{line}: error[BE801]: record {line} is "
                          f"broken: {reason}"), err
    assert "Traceback" not in err


def test_a_tampered_log_refuses_new_records(tmp_path):
    root = fill(tmp_path)
    content = lines(root)
    (root / ".buildenv" / "audit" / "log.jsonl").write_text("".join(content[:-1]))
    with pytest.raises(DiagnosticError) as caught:
        append(root / ".buildenv", 1, 9)
    assert caught.value.diagnostics[0].code == "BE801"
    assert len(lines(root)) == 4


def test_a_torn_last_line_is_cut_off_by_the_next_writer(tmp_path):
    """A crash inside the write leaves half a line, which was never a record."""
    root = fill(tmp_path, 3)
    path = root / ".buildenv" / "audit" / "log.jsonl"
    with open(path, "a") as handle:
        handle.write('{"seq": 4, "purpo')
    assert verify(root)[0] == 1
    append(root / ".buildenv", 1, 1)
    assert [json.loads(x)["seq"] for x in lines(root)] == [1, 2, 3, 4]
    assert verify(root)[0] == 0


def test_audit_lists_records_per_environment(tmp_path):
    root = fill(tmp_path, 2)
    AuditLog(root / ".buildenv").append(purpose="drift", environment="other", dataset="x",
                                        digest=None, columns=[], rows=None)
    code, out, err = invoke_cli(["audit", "other", "--format", "json"], root)
    assert code == 0
    records = json.loads(out)["records"]
    assert [(r["seq"], r["purpose"], r["environment"]) for r in records] == [(3, "drift",
                                                                             "other")]
    code, out, err = invoke_cli(["audit"], root)
    assert out.splitlines()[0].split() == ["SEQ", "TIME", "ACTOR", "OS", "USER", "PURPOSE",
                                           "ENVIRONMENT", "DATASET", "ROWS", "DIGEST", "COLUMNS"]
    assert len(out.splitlines()) == 4


def test_an_unwritable_log_stops_restricted_reads_and_releases(tmp_path):
    """The record comes first: when it cannot be written, nothing restricted is read, released
    or shown, and the user gets BE801 (exit 1), not a traceback."""
    from access_repo import write_access_repo

    root = write_access_repo(tmp_path / "repo", rows=500)
    assert invoke_cli(["lock"], root)[0] == 0
    audit = root / ".buildenv" / "audit"
    if audit.exists():
        for path in audit.iterdir():
            path.unlink()
        audit.rmdir()
    audit.write_text("a file where the log's directory belongs\n")
    for args in (["validate", "people"],
                 ["stats", "people", "--dataset", "people", "--epsilon", "0.1"],
                 ["peek", "people", "--dataset", "people", "--rows", "1", "--reason", "debug"]):
        code, out, err = invoke_cli(args, root)
        assert code == 1, (args, out, err)
        assert "error[BE801]: cannot write the audit log" in err, (args, err)
        assert "Traceback" not in err and out == "", (args, out)
