"""`buildenv stats`: exact figures of public data, differentially private ones of restricted
data within their reported accuracy, a budget that stops exactly (across processes), bad input,
and no row value in any output or file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from access_repo import ENV, SENTINEL, files_containing, people_table, write_access_repo
from conftest import REPO_ROOT, invoke_cli

from buildenv.access.budget import Ledger
from buildenv.access.unit import Truncation
from buildenv.data.gate.audit import AuditLog

ROWS = 20_000
OPEN = ENV.replace("name: people", "name: open").replace("restricted: [people]",
                                                          "restricted: []")
WEIGHT = ("name: people-weight\nextends: people\ndatasets:\n  people:\n    columns:\n"
          "      weight: {dtype: float64}\n")
NO_BUDGET = "name: people-none\nextends: people\nprivacy:\n  epsilon_budget: 0\n"


@pytest.fixture(scope="module")
def truth() -> pa.Table:
    return people_table(ROWS)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = write_access_repo(tmp_path / "repo", rows=ROWS, budget="1.0", extra_envs={
        "open": OPEN.replace("BUDGET", "1.0"), "people-weight": WEIGHT, "people-none": NO_BUDGET})
    code, out, err = invoke_cli(["lock"], root)
    assert code == 0, err
    return root


def stats(root: Path, *args: str, env: str = "people") -> tuple[int, str, str]:
    return invoke_cli(["stats", env, "--dataset", "people", *args], root)


def column(report: dict, name: str) -> dict:
    return next(c for c in report["columns"] if c["name"] == name)


def test_public_figures_are_exact(repo, truth):
    code, out, err = stats(repo, "--format", "json", env="open")
    assert (code, err) == (0, ""), err
    report = json.loads(out)
    assert report["private"] is False and report["rows"]["value"] == ROWS
    country = column(report, "country")
    counts = dict(zip(*np.unique(np.asarray(truth["country"]), return_counts=True)))
    assert {c["value"]: c["count"] for c in country["histogram"]} == \
        {k: int(counts.get(k, 0)) for k in ["US", "GB", "DE", "FR", "BR"]}
    assert country["outside_domain"]["value"] == 1  # the planted sentinel
    age = column(report, "age")
    assert age["mean"]["value"] == round(float(pc.mean(truth["age"]).as_py()), 3)
    assert column(report, "score")["nulls"]["value"] == truth["score"].null_count
    assert sum(c["count"] for c in age["histogram"]) == ROWS
    assert not (repo / ".buildenv" / "privacy").exists()  # no budget spent on public data


def test_private_figures_are_within_their_reported_accuracy(repo, truth):
    code, out, err = stats(repo, "--epsilon", "1", "--format", "json")
    assert (code, err) == (0, ""), err
    report = json.loads(out)
    assert report["private"] is True and report["epsilon"] == 1.0
    assert report["budget"] == {"scope": "people", "total": 1.0, "spent": 1.0, "left": 0.0}
    # 4x the 95% half-width: a Laplace draw exceeds it with probability 20**-4 per figure, so
    # fresh DP noise fails this test about once in 6,000 runs (3x failed 2 runs in 1,000)
    assert abs(report["rows"]["value"] - ROWS) <= 4 * report["rows"]["accuracy"]
    country = column(report, "country")
    values = np.asarray(truth["country"])
    for cell in country["histogram"]:
        real = int((values == cell["value"]).sum())
        assert abs(cell["count"] - real) <= 4 * cell["accuracy"], cell
    age = column(report, "age")
    real_ages = np.asarray(truth["age"])
    for cell, lo in zip(age["histogram"], range(16, 101, 5)):
        real = int(((real_ages >= lo) & (real_ages < lo + 5)).sum())
        assert abs(cell["count"] - real) <= 4 * cell["accuracy"], cell
    lo, hi = age["mean"]["interval"]
    width = hi - lo
    assert lo - width <= float(real_ages.mean()) <= hi + width
    assert abs(age["mean"]["value"] - real_ages.mean()) < 1.0
    score = column(report, "score")
    assert abs(score["nulls"]["value"] - truth["score"].null_count) <= 4 * \
        score["nulls"]["accuracy"]
    median = float(np.median(real_ages))
    q_lo, q_hi = age["quantiles"]["p50"]["interval"]
    assert q_lo <= median <= q_hi
    assert column(report, "email")["values"] == []  # one row per value: nothing clears
    assert math.isclose(sum(f["epsilon"] for f in report["figures"]), 1.0, rel_tol=1e-9)


def test_repeated_calls_stop_exactly_when_the_budget_is_spent(repo):
    for i in range(4):
        code, out, err = stats(repo, "--epsilon", "0.25", "--columns", "plan")
        assert code == 0, err
        assert f"{(i + 1) * 0.25:g} spent, {1 - (i + 1) * 0.25:g} left" in out
    code, out, err = stats(repo, "--epsilon", "0.25", "--columns", "plan")
    assert (code, out) == (1, "")
    assert "error[BE811]: privacy budget of dataset 'people' exceeded: this call would spend " \
        "epsilon 0.25; 1 of 1 is spent, 0 is left (nothing was released, nothing was spent)" \
        in err
    assert err.startswith("environments/people.yaml:")
    ledger = Ledger(repo / ".buildenv")
    assert len(ledger.records()) == 4 and ledger.spent("people") == 1.0
    releases = [r for r in AuditLog(repo / ".buildenv").records()
                if (r.get("details") or {}).get("outcome") == "released"]
    assert [r["details"]["epsilon"] for r in releases] == [0.25] * 4


def test_parallel_processes_stop_exactly_when_the_budget_is_spent(repo):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUILDENV_ROOT": str(repo)}
    procs = [subprocess.Popen([sys.executable, "-m", "buildenv", "stats", "people", "--dataset",
                               "people", "--columns", "plan,age", "--epsilon", "0.3"],
                              cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 0, 0, 1, 1, 1], results  # floor(1.0 / 0.3) = 3 fit
    assert all("BE811" in err for code, _, err in results if code == 1)
    assert all(out == "" for code, out, _ in results if code == 1)
    assert math.isclose(Ledger(repo / ".buildenv").spent("people"), 0.9)
    code, out, err = invoke_cli(["audit", "--verify"], repo)
    assert code == 0, err


@pytest.mark.parametrize("args, code, needle", [
    (["--epsilon", "0"], "BE813", "--epsilon must be a finite number greater than 0 (got 0)"),
    (["--epsilon", "-1"], "BE813", "(got -1)"),
    (["--epsilon", "nan"], "BE813", "(got nan)"),
    (["--epsilon", "inf"], "BE813", "(got inf)"),
    (["--bins", "0"], "BE826", "--bins must be between 1 and 1000 (got 0)"),
    (["--columns", "agee"], "BE010", "unknown column 'agee' in dataset 'people'"),
])
def test_bad_input_releases_and_spends_nothing(repo, args, code, needle):
    exit_code, out, err = stats(repo, *args)
    assert (exit_code, out) == (2, "")
    assert f"error[{code}]" in err and needle in err, err
    assert not (repo / ".buildenv" / "privacy" / "ledger.jsonl").exists()


def test_a_number_without_range_asked_for_statistics(repo):
    code, out, err = stats(repo, "--columns", "weight,age", env="people-weight")
    assert (code, out) == (2, "")
    assert "error[BE814]: column 'weight' (float64) of dataset 'people' has neither a range " \
        "nor a domain" in err
    assert "hint: declare the bounds users may know publicly: `weight: {dtype: float64, " \
        "range: [lo, hi]}`" in err
    assert err.startswith("environments/people-weight.yaml:6:")
    code, out, err = stats(repo, "--epsilon", "0.1", env="people-weight")  # default: a note
    assert code == 0, err
    assert "note: weight: no range declared, so only its null count is released" in out


def test_no_budget_no_release(repo):
    code, out, err = stats(repo, env="people-none")
    assert (code, out) == (2, "")
    assert "error[BE812]: environment people-none declares no privacy budget for dataset " \
        "'people'" in err


def test_unknown_dataset_and_missing_lock(repo, tmp_path):
    code, _, err = invoke_cli(["stats", "people", "--dataset", "peeple"], repo)
    assert code == 2 and "error[BE009]: unknown dataset 'peeple'" in err
    (repo / "environments" / "people.lock.json").unlink()
    code, _, err = stats(repo)
    assert code == 2 and "error[BE050]: environment 'people' has no lock" in err


def test_without_opendp_the_diagnostic_names_the_extra(repo, monkeypatch):
    for name in [m for m in sys.modules if m == "opendp" or m.startswith("opendp.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opendp", None)
    code, out, err = stats(repo)
    assert (code, out) == (2, "")
    assert "error[BE810]: `buildenv stats` of a restricted dataset needs OpenDP" in err
    assert "hint: install buildenv's privacy extra: pip install 'buildenv[privacy]'" in err
    assert not (repo / ".buildenv" / "privacy" / "ledger.jsonl").exists()
    code, out, err = stats(repo, env="open")  # public data needs no OpenDP
    assert code == 0, err


def test_no_row_value_reaches_any_output_or_file(repo):
    outputs = [stats(repo, "--epsilon", "0.2"),
               stats(repo, "--epsilon", "0.2", "--format", "json"),
               stats(repo, "--epsilon", "0.2", "--columns", "email,country", "--bins", "3"),
               invoke_cli(["audit"], repo), invoke_cli(["audit", "--format", "json"], repo)]
    for code, out, err in outputs:
        assert code == 0, err
        assert SENTINEL not in out and SENTINEL not in err
        assert "user1@example.org" not in out  # no e-mail is common enough to be released
    assert files_containing(repo, SENTINEL) == []
    code, out, err = invoke_cli(["audit", "--verify"], repo)
    assert code == 0 and "hash chain intact" in out


def test_each_release_is_an_audit_record_after_its_read(repo):
    code, _, err = stats(repo, "--epsilon", "0.5", "--columns", "age")
    assert code == 0, err
    records = AuditLog(repo / ".buildenv").records()
    assert [(r["purpose"], r["details"]["outcome"]) for r in records] == [
        ("stats", "read"), ("stats", "released")]
    release = records[1]
    assert release["details"]["epsilon"] == 0.5 and release["columns"] == ["age"]
    assert release["digest"] == records[0]["digest"] and release["rows"] is None


def test_a_person_with_many_rows_counts_once_up_to_the_bound():
    cut = Truncation("who", 2)
    first = pa.record_batch({"who": pa.array([1, 1, 1, 2, None, None, None])})
    second = pa.record_batch({"who": pa.array([1, 2, 2, 3, None])})
    assert cut.keep(first).tolist() == [True, True, False, True, True, True, False]
    assert cut.keep(second).tolist() == [False, True, False, True, False]
    assert cut.dropped == 5


def test_the_privacy_unit_scales_the_noise(tmp_path):
    per_person = ENV.replace("  peek:", "  units: {people: {key: person_id, max_rows: 4}}\n"
                             "  peek:")
    root = write_access_repo(tmp_path / "r", rows=2_000, budget="5.0")
    (root / "environments" / "people.yaml").write_text(per_person.replace("BUDGET", "5.0"))
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = stats(root, "--epsilon", "1", "--columns", "plan", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows_per_person"] == 4 and report["person_key"] == "person_id"
    scales = {f["figure"]: f["scale"] for f in report["figures"]}
    assert scales["rows"] == pytest.approx(4 / 0.5, rel=1e-6)  # d_in 4, epsilon 1 over 2


def test_a_new_version_of_the_data_gets_no_fresh_budget(tmp_path):
    """The ledger's scope is the dataset, not its digest: next quarter's export of the same
    people spends from the same budget (docs/privacy.md: the rule for a new version)."""
    import pyarrow.parquet as pq

    root = write_access_repo(tmp_path / "r", rows=3_000, budget="1.0", extra_envs={
        "people-q3": "name: people-q3\nextends: people\ndatasets:\n  people:\n"
                     "    uri: data/people-q3.parquet\n"})
    pq.write_table(people_table(3_100, seed=12), root / "data" / "people-q3.parquet")
    assert invoke_cli(["lock"], root)[0] == 0
    assert stats(root, "--epsilon", "0.75", "--columns", "plan")[0] == 0
    code, out, err = stats(root, "--epsilon", "0.5", "--columns", "plan", env="people-q3")
    assert (code, out) == (1, "") and "0.75 of 1 is spent, 0.25 is left" in err
    assert stats(root, "--epsilon", "0.25", "--columns", "plan", env="people-q3")[0] == 0
    digests = {r["digest"] for r in Ledger(root / ".buildenv").records()}
    assert len(digests) == 2  # two versions, one budget
    # unless the policy says each version holds different people
    text = (root / "environments" / "people.yaml").read_text()
    (root / "environments" / "people.yaml").write_text(
        text.replace("  epsilon_budget: 1.0\n", "  epsilon_budget: 1.0\n"
                     "  budget_per_version: [people]\n"))
    assert invoke_cli(["lock"], root)[0] == 0
    code, out, err = stats(root, "--epsilon", "1", "--columns", "plan", env="people-q3")
    assert code == 0, err  # this version's own scope: nothing spent in it yet
    code, out, err = stats(root, "--epsilon", "0.25", "--columns", "plan", env="people-q3")
    assert code == 1 and "1 of 1 is spent, 0 is left" in err
    scopes = {r["scope"] for r in Ledger(root / ".buildenv").records()}
    assert len(scopes) == 2 and "people" in scopes


def test_a_restricted_directory_of_files_is_read_against_its_manifest(tmp_path):
    """A restricted dataset whose uri is a directory: the private read is verified file by
    file against the lock's manifest (it was refused: no locked manifest)."""
    pytest.importorskip("opendp")
    root = write_access_repo(tmp_path / "repo", rows=500, budget="1.0")
    (root / "data" / "people").mkdir()
    (root / "data" / "people.parquet").rename(root / "data" / "people" / "part-0.parquet")
    env = root / "environments" / "people.yaml"
    env.write_text(env.read_text().replace("uri: data/people.parquet", "uri: data/people/"))
    assert invoke_cli(["lock", "people"], root)[0] == 0
    code, out, err = stats(root, "--epsilon", "0.5", "--columns", "age", "--format", "json")
    assert (code, err) == (0, ""), err
    assert json.loads(out)["private"] is True
