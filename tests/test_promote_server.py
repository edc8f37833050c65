"""promote / retrain / history / rollback against a real `mlflow server`.

Two servers, each on 127.0.0.1 with `--workers 1`: one on a sqlite backend store, one on a
throwaway PostgreSQL 15 cluster. Artifacts go through the server (`mlflow-artifacts:`), so
models are loaded from the registry over HTTP. One repository serves both: the second run's
builds are content-cache hits that only register.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke_cli
from services import events, make_churn_repo, mlflow_server, postgres, write_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server") / "repo"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracking_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    if request.param == "sqlite":
        with mlflow_server(work / "server") as uri:
            yield uri
    else:
        with postgres(work / "pg") as backend, mlflow_server(work / "server", backend) as uri:
            yield uri


def test_promote_retrain_history_rollback(repo: Path, tracking_uri: str) -> None:
    env = {"BUILDENV_TRACKING_URI": tracking_uri}

    def cli(*args: str) -> tuple[int, str, str]:
        return invoke_cli(list(args), repo, env=env)

    make_churn_repo(repo)  # back to data v1 (the previous backend's run moved it on)
    for args in (["lock", "prod"], ["build", "churn", "--env", "prod"]):
        code, out, err = cli(*args)
        assert code == 0, out + err
    assert "registered churn v1" in out
    code, out, err = cli("promote", "churn", "--env", "prod")
    assert code == 0, out + err
    assert "prod-champion: unset -> v1 (history #1)" in err

    write_events(repo, "events-v2.parquet", events(2))
    code, out, err = cli("retrain", "prod", "--dataset", "events", "--uri",
                         "data/events-v2.parquet", "--promote")
    assert code == 0, out + err
    assert "[gate churn] passed" in out and "[promote churn] passed: prod-champion: v1 -> v2" in out

    code, out, err = cli("history", "churn", "--env", "prod", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["current"] == "2"
    assert [(e["action"], e["version"]) for e in data["entries"]] == [("promote", "1"),
                                                                       ("promote", "2")]
    assert data["entries"][1]["lineage"]["checks"] == {"drift": "passed"}

    code, out, err = cli("rollback", "churn", "--env", "prod")
    assert (code, out.strip()) == (0, "prod-champion: moved v2 -> v1"), err
    code, out, err = cli("promote", "churn", "--env", "prod", "--dry-run")
    assert code == 0, err
    assert "held-out rows (20% of 'events'" in out  # v2 (dist) vs v1 (champion), both from HTTP
