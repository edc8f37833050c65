"""Build phases on Pants workunits: buildenv's summary line, parsed and reported at info level.

The parsing tests need no Pants (they also run in the Python 3.11 suite); the workunit tests
run under tests/pants/run_rule_tests.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import buildenv_pants  # noqa: F401
except ImportError:  # the Python 3.11 suite: rules/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "rules"))

from buildenv_pants.phases import build_summary

# What `buildenv build rec --env prod-2` writes to stderr outside a terminal.
STDERR = """\
rec @ prod-2: started
check rec @ prod-2: started
hash data/items.parquet: started
hash data/items.parquet: done in 1.20 s (300 MiB, 250 MiB/s)
check rec @ prod-2: done in 1.31 s
train rec @ prod-2: started
train rec @ prod-2: 30 s
train rec @ prod-2: done in 55.0 s
rec @ prod-2: built in 61.2 s (check 1.31 s, validate 2.00 s, train 52.1 s, importance 3.10 s, \
verify 0.20 s, save 2.30 s)
"""


def test_summary_of_the_pair():
    summary = build_summary(STDERR, "rec", "prod-2")
    assert summary is not None
    assert summary.line.startswith("rec @ prod-2: built in 61.2 s (check 1.31 s")
    assert (summary.status, summary.seconds) == ("built", 61.2)
    assert summary.timings == (("check", 1.31), ("validate", 2.0), ("train", 52.1),
                               ("importance", 3.1), ("verify", 0.2), ("save", 2.3))
    assert summary.metadata()["buildenv_timings"]["train"] == 52.1


def test_no_summary_for_another_pair_or_a_short_build():
    assert build_summary(STDERR, "rec", "prod") is None
    assert build_summary(STDERR, "re", "prod-2") is None
    assert build_summary("rec @ prod-2: started\n", "rec", "prod-2") is None
    assert build_summary("", "rec", "prod-2") is None
    failed = build_summary("rec @ prod-2: failed in 1.50 s (check 1.50 s)\n", "rec", "prod-2")
    assert failed is not None and failed.status == "failed"
    assert failed.timings == (("check", 1.5),)


def test_phases_workunit_is_info_with_metadata():
    pytest.importorskip("pants.engine.engine_aware", reason="needs Pants (run_rule_tests.sh)")
    from pants.util.logging import LogLevel

    from buildenv_pants.package import BuildPhases

    shown = BuildPhases(build_summary(STDERR, "rec", "prod-2"))
    assert shown.level() == LogLevel.INFO
    assert shown.message() == STDERR.splitlines()[-1]
    assert shown.metadata()["buildenv_status"] == "built"
    hidden = BuildPhases(None)
    assert (hidden.level(), hidden.message(), hidden.metadata()) == (LogLevel.DEBUG, None, None)


def test_phases_rule_reads_the_process_stderr():
    pytest.importorskip("pants.testutil", reason="RuleRunner tests: tests/pants/run_rule_tests.sh")
    from pants.testutil.rule_runner import run_rule_with_mocks

    from buildenv_pants.package import BuildPhasesRequest, buildenv_build_phases

    got = run_rule_with_mocks(buildenv_build_phases,
                              rule_args=[BuildPhasesRequest("rec", "prod-2", STDERR.encode())])
    assert got.summary == build_summary(STDERR, "rec", "prod-2")
