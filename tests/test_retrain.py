"""`buildenv retrain`: new data -> validate, drift, relock, rebuild, gate, promote; or nothing.

One repository and MLflow store for the module. The end-to-end scenario is one test (its
phases depend on each other); the other tests leave the repository as they found it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import invoke_cli
from services import events, make_churn_repo, write_events

from buildenv.compile.registry import client
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.release.journal import recover
from buildenv.release.retrain import rewrite_uri

pytestmark = pytest.mark.slow

WATCHED = ("environments/prod.yaml", "environments/prod.lock.json",
           "dist/churn/prod/buildenv.json", "dist/churn/prod/model.skops")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_churn_repo(tmp_path_factory.mktemp("retrain") / "repo")
    for args in (["lock", "prod"], ["build", "churn", "--env", "prod"],
                 ["promote", "churn", "--env", "prod"]):
        code, out, err = invoke_cli(args, root)
        assert code == 0, out + err
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in WATCHED}


def champion(root: Path) -> str:
    c = client(Project.discover(root))
    return str(c.get_registered_model("churn").aliases["prod-champion"])


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(events_: list[dict]) -> list[tuple[str, str]]:
    return [(e["step"], e["status"]) for e in events_]


def retrain(root: Path, *args: str) -> tuple[int, str, str]:
    return invoke_cli(["retrain", "prod", *args], root)


def test_retrain_end_to_end(repo: Path) -> None:
    log = repo / "events.jsonl"
    assert champion(repo) == "1"

    # nothing new: nothing happens
    code, out, err = retrain(repo, "--events", str(log))
    assert code == 0, err
    assert "[detect] unchanged: every dataset matches the lock; nothing to retrain" in out
    assert steps(read_events(log)) == [("start", "started"), ("detect", "unchanged")]
    log.unlink()

    # a new version lands at a new uri: validated, drift-checked, relocked, rebuilt, gated, promoted
    write_events(repo, "events-v2.parquet", events(2))
    code, out, err = retrain(repo, "--dataset", "events", "--uri", "data/events-v2.parquet",
                             "--promote", "--events", str(log))
    assert code == 0, out + err
    got = read_events(log)
    assert steps(got) == [
        ("start", "started"), ("dataset", "changed"), ("detect", "changed"),
        ("validate", "passed"), ("drift", "passed"), ("lock", "passed"), ("build", "passed"),
        ("gate", "passed"), ("swap", "passed"), ("promote", "passed"), ("finish", "passed")]
    assert len({e["retrain"] for e in got}) == 1
    assert got[-2]["message"] == "prod-champion: v1 -> v2"
    # the gate line says what it judged: the values, not only the verdict
    assert re.search(r"^\[gate churn\] passed: val_auc 0\.\d{4} \(candidate v2, champion v1 "
                     r"0\.\d{4}\); min_value >= 0\.65: 0\.\d{4} pass; max_regression <= "
                     r"0\.\d+: 0\.\d{4} pass; required_check:validate passed: passed \(build\) "
                     r"pass", out, re.M), out
    assert champion(repo) == "2"
    env_text = (repo / "environments/prod.yaml").read_text()
    assert "    uri: data/events-v2.parquet   # replaced by retrain --uri\n" in env_text
    lock = json.loads((repo / "environments/prod.lock.json").read_text())
    lineage = json.loads((repo / "dist/churn/prod/buildenv.json").read_text())
    assert lock["datasets"]["events"]["uri"] == "data/events-v2.parquet"
    assert lineage["datasets"]["events"]["digest"] == lock["datasets"]["events"]["digest"]
    assert not any(p.is_dir() for p in (repo / ".buildenv/retrain").iterdir())
    tags = _retrain_run(repo, got[0]["retrain"])
    assert tags["buildenv.step.gate.churn"] == "passed"
    assert tags["buildenv.retrain_status"] == "promoted"
    version_tags = client(Project.discover(repo)).get_model_version("churn", "2").tags
    assert version_tags["buildenv.check.drift"] == "passed"
    assert version_tags["buildenv.retrain_id"] == got[0]["retrain"]

    # a degraded version (labels shuffled): the gate stops it, and nothing changes
    log.unlink()
    before = snapshot(repo)
    write_events(repo, "events-v3.parquet", events(3, shuffle_labels=True))
    code, out, err = retrain(repo, "--dataset", "events", "--uri", "data/events-v3.parquet",
                             "--promote", "--events", str(log))
    assert code == 1
    assert re.search(r"^environments/prod\.yaml:\d+:\d+: error\[BE701\]: val_auc 0\.[45]\d{3} of "
                     r"candidate churn v3 is below the minimum 0\.65 \(promotion\.min_value of "
                     r"prod\)$", err, re.M), err
    got = read_events(log)
    assert steps(got)[-3:] == [("build", "passed"), ("gate", "failed"), ("finish", "failed")]
    assert got[-1]["message"] == ("stopped; restored environments/prod.lock.json, "
                                  "environments/prod.yaml")
    assert "error[BE701]" in got[-1]["alert"][0]
    gate = got[-2]["evaluation"]
    assert gate["candidate"]["version"] == "3" and gate["champion"]["version"] == "2"
    assert re.match(r"val_auc 0\.[45]\d{3} \(candidate v3, champion v2 0\.\d{4}\); "
                    r"min_value >= 0\.65: 0\.[45]\d{3} FAIL", got[-2]["message"]), got[-2]
    assert snapshot(repo) == before
    assert champion(repo) == "2"
    assert _retrain_run(repo, got[0]["retrain"])["buildenv.retrain_status"] == "stopped"

    # a new version replaces the data in place: the object store kept the locked version, so
    # drift still has its baseline (without the store there would be none: skipped)
    log.unlink()
    write_events(repo, "events-v2.parquet", events(5))
    code, out, err = retrain(repo, "--promote", "--events", str(log))
    assert code == 0, out + err
    got = read_events(log)
    assert ("detect", "changed") in steps(got)
    assert got[steps(got).index(("detect", "changed"))]["datasets"] == {
        "events": "new content at the same uri"}
    drift = next(e for e in got if e["step"] == "drift")
    assert drift["status"] == "passed", drift
    assert champion(repo) == "4"


def test_invalid_data_stops_before_anything_changes(repo: Path) -> None:
    before = snapshot(repo)
    bad = events(6)
    bad.loc[:4, "plan"] = "enterprise"
    write_events(repo, "events-bad.parquet", bad)
    log = repo / "invalid.jsonl"
    code, out, err = retrain(repo, "--dataset", "events", "--uri", "data/events-bad.parquet",
                             "--promote", "--events", str(log))
    assert code == 1
    assert "error[BE204]" in err and "enterprise" in err
    assert steps(read_events(log))[-2:] == [("validate", "failed"), ("finish", "failed")]
    assert snapshot(repo) == before


def test_missing_dataset_file_is_a_failed_data_check(repo: Path) -> None:
    before = snapshot(repo)
    code, out, err = retrain(repo, "--dataset", "events", "--uri", "data/nope.parquet")
    assert code == 1
    assert "error[BE053]: dataset 'events': cannot read 'data/nope.parquet': not found" in err
    assert snapshot(repo) == before


def test_usage_errors_exit_2(repo: Path) -> None:
    code, _, err = retrain(repo, "--dataset", "events")
    assert code == 2 and "--dataset and --uri go together" in err
    code, _, err = retrain(repo, "--dataset", "evnets", "--uri", "x.parquet")
    assert code == 2 and "unknown dataset 'evnets' in environment prod" in err
    assert "did you mean 'events'?" in err


def test_recover_restores_files_of_a_killed_retrain(repo: Path) -> None:
    project = Project.discover(repo)
    lock = repo / "environments/prod.lock.json"
    good = lock.read_bytes()
    work = project.state_dir / "retrain" / "deadbeef0000"
    (work / "saved").mkdir(parents=True)
    (work / "saved" / "0-prod.lock.json").write_bytes(good)
    (work / "journal.json").write_text(json.dumps({"phase": "locking", "saved": [
        {"path": "environments/prod.lock.json", "backup": "saved/0-prod.lock.json",
         "existed": True}]}))
    lock.write_text("half-written")
    assert recover(project) == ["environments/prod.lock.json"]
    assert lock.read_bytes() == good
    assert not work.exists()


def test_inherited_uri_is_not_rewritten(tmp_path: Path) -> None:
    root = make_churn_repo(tmp_path)
    (root / "environments/prod-eu.yaml").write_text("name: prod-eu\nextends: prod\n")
    project = Project.discover(root)
    multiverse = Multiverse(project)
    with pytest.raises(DiagnosticError) as caught:
        rewrite_uri(project, multiverse, multiverse.resolve("prod-eu"), "events", "data/eu.parquet")
    assert caught.value.diagnostics[0].to_text().startswith(
        "environments/prod-eu.yaml:2:1: error[BE710]: the uri of dataset 'events' is inherited "
        "(environments/prod.yaml:5); retrain --uri edits only environments/prod-eu.yaml")
    path, old, text = rewrite_uri(project, multiverse, multiverse.resolve("prod"), "events", "s3://b/e v2.pq")
    assert old == "data/events-v1.parquet"
    assert '    uri: "s3://b/e v2.pq"   # replaced by retrain --uri\n' in text


def _retrain_run(root: Path, retrain_id: str) -> dict:
    c = client(Project.discover(root))
    exp = c.get_experiment_by_name("buildenv/retrain")
    runs = c.search_runs([exp.experiment_id], f"tags.`buildenv.retrain_id` = '{retrain_id}'")
    assert len(runs) == 1
    return runs[0].data.tags
