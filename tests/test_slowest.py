"""tests/slowest.py ranks test cases across the JUnit reports of a `./pants test ::` run."""

from __future__ import annotations

from slowest import main, slowest


def _report(path, cases):
    body = "".join(f'<testcase classname="{c}" name="{n}" time="{t}"/>' for c, n, t in cases)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}'
                    "</testsuite></testsuites>")


def test_ranks_across_files_slowest_first(tmp_path):
    _report(tmp_path / "tests.test_a.xml", [("tests.test_a", "quick", "0.01"),
                                            ("tests.test_a", "slow", "12.5")])
    _report(tmp_path / "tests.test_b.xml", [("tests.test_b", "slower", "30"),
                                            ("tests.test_b", "tie", "0.01")])
    (tmp_path / "notes.txt").write_text("not a report")
    assert slowest(tmp_path, top=3) == [(30.0, "tests.test_b::slower"),
                                        (12.5, "tests.test_a::slow"),
                                        (0.01, "tests.test_a::quick")]
    assert len(slowest(tmp_path)) == 4


def test_prints_the_ranking_and_refuses_a_missing_directory(tmp_path, capsys):
    _report(tmp_path / "r.xml", [("tests.test_a", "slow", "2")])
    assert main([str(tmp_path), "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"slowest 1 test (from {tmp_path}):", "     2.00 s  tests.test_a::slow"]
    assert main([str(tmp_path / "missing")]) == 2
    assert "no test reports" in capsys.readouterr().err
