"""`buildenv import feast`: served and training-only features from a Feast registry."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import invoke_cli, write_env
from feast_repo import recorded, write_feast_repo

from buildenv.core.project import Project
from buildenv.env.importers.feast_import import FeastError, cache_path, translate

PYPROJECT = """\
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.churn]
entry = "train/churn.py:train"
environments = ["serving"]
"""

TRAIN = '''\
from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("customer_stats", columns=["tenure", "spend", "active"])
    history = ctx.read("customer_history", columns=["n_orders"])
    X = df[["tenure", "spend"]].assign(n_orders=history["n_orders"])
    return LogisticRegression().fit(X, df["active"])
'''

SERVICE = "churn_v1"


def repo_with_feast(root: Path, registry: bytes = b"registry bytes") -> Path:
    """A buildenv repository with the Feast repository in `feast/` (its registry stands in
    for what `feast apply` wrote; the description Feast gave of it is in the cache)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments").mkdir(exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    (root / "train" / "churn.py").write_text(TRAIN)
    feast = write_feast_repo(root / "feast")
    (feast / "data" / "registry.db").write_bytes(registry)
    return root


def prime(root: Path) -> None:
    key = cache_path(Project.discover(root), root / "feast", SERVICE)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(recorded()))


def test_online_features_are_served_the_rest_training_only(tmp_path):
    root = repo_with_feast(tmp_path)
    imported = translate(recorded(), SERVICE, root / "feast", Project.discover(root))
    stats, history = imported.datasets["customer_stats"], imported.datasets["customer_history"]
    assert stats["uri"] == history["uri"] == "feast/data/events.parquet"
    assert stats["columns"]["customer_id"] == {
        "dtype": "int64", "nullable": False, "monitor": False,
        "description": "Feast entity 'customer' (join key)"}
    assert stats["columns"]["tenure"] == {"dtype": "float64"}  # served
    assert stats["columns"]["spend"] == {"dtype": "float32"}
    assert stats["columns"]["plan_name"]["serving"] is False  # not in the service
    assert history["columns"]["n_orders"]["serving"] is False  # offline view
    assert history["columns"]["plan_id"]["dtype"] == "string"
    assert stats["columns"]["event_timestamp"]["dtype"] == "timestamp"
    assert imported.skipped == [
        "feature 'customer_stats:recent_scores' is Array(Float64): lists, maps and bytes "
        "have no dtype",
        "feature 'customer_history:tags' is Array(String): lists, maps and bytes have no "
        "dtype"]


def test_an_unknown_service_is_be907_naming_the_services(tmp_path):
    root = repo_with_feast(tmp_path)
    with pytest.raises(FeastError) as caught:
        translate({**recorded(), "service": None}, "churn_v2", root / "feast",
                  Project.discover(root))
    assert caught.value.code == "BE907"
    assert caught.value.message.endswith("has no feature service 'churn_v2' (services: "
                                         "churn_v1)")
    assert caught.value.hints == ("did you mean 'churn_v1'?",)


def test_a_repository_never_applied_is_be906(tmp_path):
    root = repo_with_feast(tmp_path)
    (root / "feast" / "data" / "registry.db").unlink()
    code, out, err = invoke_cli(["import", "feast", "feast", "--feature-service", SERVICE],
                                root)
    assert code == 2
    assert "error[BE906]: Feast repository 'feast' has no registry (data/registry.db): it " \
           "was never applied" in err
    code, out, err = invoke_cli(["import", "feast", "train", "--feature-service", SERVICE],
                                root)
    assert code == 2 and "error[BE906]: 'train' is not a Feast repository" in err


def test_the_written_environment_refuses_a_model_needing_an_offline_feature(tmp_path):
    root = repo_with_feast(tmp_path)
    prime(root)
    code, out, err = invoke_cli(["import", "feast", "feast", "--feature-service", SERVICE,
                                 "--env", "serving"], root)
    assert code == 0, err
    assert out == ("environments/serving.yaml: written (2 dataset(s) from feature service "
                   "churn_v1)\n")
    assert err.count("warning[BE908]") == 2
    (root / "environments" / "serving.yaml").write_text(
        (root / "environments" / "serving.yaml").read_text()
        + "label: {dataset: customer_stats, column: active, classes: [false, true]}\n"
        + "serving: {stack: sklearn, ops: [sklearn.linear_model.*]}\n")
    assert invoke_cli(["lock", "serving"], root)[0] == 0
    code, out, err = invoke_cli(["build", "churn", "--env", "serving", "--no-register"], root)
    assert code == 1
    assert "error[BE401]: model input 'n_orders' is training-only in environment serving" in err


def test_an_existing_environment_keeps_its_constraints(tmp_path):
    root = repo_with_feast(tmp_path)
    prime(root)
    write_env(root, "serving", """\
        name: serving
        description: hand-written
        datasets:
          customer_stats:
            uri: feast/data/events.parquet
            columns:
              tenure: {dtype: float64, range: [0, 100]}
              plan_name: {dtype: string, domain: [basic, pro]}
        """)
    code, out, err = invoke_cli(["import", "feast", "feast", "--feature-service", SERVICE,
                                 "--env", "serving"], root)
    assert code == 0 and "updated" in out, err
    doc = yaml.safe_load((root / "environments" / "serving.yaml").read_text())
    assert doc["description"] == "hand-written"
    stats = doc["datasets"]["customer_stats"]["columns"]
    assert stats["tenure"] == {"dtype": "float64", "range": [0, 100]}
    assert stats["plan_name"] == {"dtype": "string", "domain": ["basic", "pro"],
                                  "serving": False}
    assert stats["spend"] == {"dtype": "float32"}
    assert "customer_history" in doc["datasets"]
    assert invoke_cli(["show", "serving"], root)[0] == 0  # it loads


@pytest.fixture(scope="session")
def feast_interpreter() -> str:
    """Feast's interpreter: BUILDENV_FEAST_PYTHON, else one built once per machine the way
    buildenv builds it (skipped when it cannot be built, e.g. without a package index)."""
    explicit = os.environ.get("BUILDENV_FEAST_PYTHON")
    if explicit:
        return explicit
    from buildenv.env.importers.feast_python import _create

    root = Path.home() / ".cache" / "buildenv-tests" / "feast-0.67.0"
    if not (root / "bin" / "python").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            _create(root)
        except FeastError as exc:
            pytest.skip(f"no Feast environment: {exc.message}")
    return str(root / "bin" / "python")


@pytest.mark.slow
def test_feast_itself_describes_the_repository_as_recorded(tmp_path, feast_interpreter,
                                                           monkeypatch):
    root = repo_with_feast(tmp_path)
    (root / "feast" / "data" / "registry.db").unlink()
    apply = subprocess.run([feast_interpreter, "-c", "import sys; from feast.cli.cli import "
                            "cli; sys.argv = ['feast', 'apply']; cli()"], cwd=root / "feast",
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "FEAST_USAGE": "False"})
    assert apply.returncode == 0, apply.stderr
    monkeypatch.setenv("BUILDENV_FEAST_PYTHON", feast_interpreter)
    code, out, err = invoke_cli(["import", "feast", "feast", "--feature-service", SERVICE],
                                root)
    assert code == 0, err
    assert "  customer_history:\n" in out and "warning[BE908]" in err
    described = json.loads(cache_path(Project.discover(root), root / "feast",
                                      SERVICE).read_text())
    assert described == recorded()
    code, out, err = invoke_cli(["import", "feast", "feast", "--feature-service", "nope"],
                                root)
    assert code == 2 and "error[BE907]" in err
