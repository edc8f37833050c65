"""The example multiverse compiles where it should and is refused where it must be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run(repo: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multiverse") / "repo"
    root.mkdir()
    for name in ("environments", "data", "examples"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def yaml_line(path: Path, needle: str) -> tuple[int, int]:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i, line.index(needle.strip()) + 1
    raise AssertionError(needle)


def test_locks_are_committed_and_current(repo):
    code, out, err = run(repo, "lock", "--check")
    assert code == 0, err


def test_training_only_feature_refused_then_built_where_served(repo):
    line, col = yaml_line(repo / "environments" / "prod-2026-06.yaml", "serving: false")
    code, out, err = run(repo, "build", "critic-aware", "--env", "prod-2026-09", "--no-register")
    assert code == 1
    assert (f"environments/prod-2026-06.yaml:{line}:{col}: error[BE401]: model input "
            "'critic_score' is training-only in environment prod-2026-09") in err
    assert "hint: it is served in: prod-2026-12" in err
    code, out, err = run(repo, "build", "critic-aware", "--env", "prod-2026-12", "--no-register")
    assert code == 0, err
    lineage = json.loads((repo / "dist/critic-aware/prod-2026-12/buildenv.json").read_text())
    assert "critic_score" in lineage["inputs"]


def test_unsupported_op_refused(repo):
    line, col = yaml_line(repo / "environments" / "prod-2026-06.yaml", "  ops:")
    code, out, err = run(repo, "build", "boosted", "--env", "prod-2026-09", "--no-register")
    assert code == 1
    assert (f"environments/prod-2026-06.yaml:{line}:{col}: error[BE404]: "
            "sklearn.ensemble.HistGradientBoostingClassifier") in err
    assert "hint: it is supported in: prod-2026-12" in err


def test_recommender_compiles_to_onnx_with_parity(repo):
    code, out, err = run(repo, "build", "recommender", "--env", "exp-onnx", "--no-register")
    assert code == 0, err
    art = repo / "dist/recommender/exp-onnx"
    lineage = json.loads((art / "buildenv.json").read_text())
    assert lineage["onnx"]["opset"] == 17
    parity = lineage["parity"]
    assert parity["rows"] > 0 and parity["label_flips"] == parity["near_ties"]
    assert parity["max_probability_diff"] < 1e-3 and parity["outside_tolerance"] == 0
    assert (art / "model.onnx").is_file()


def test_recommender_builds_on_the_synthetic_environment_without_the_real_data(tmp_path):
    """What CI compiles: prod-2026-06-synthetic, on a copy holding no real users or ratings."""
    root = tmp_path / "laptop"
    root.mkdir()
    for name in ("environments", "examples"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", root / "data",
                    ignore=shutil.ignore_patterns("users", "ratings", "BUILD"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    assert not list((root / "data").glob("users/*")) and (root / "data/movies").is_dir()
    code, out, err = run(root, "build", "recommender", "--env", "prod-2026-06-synthetic",
                         "--no-register")
    assert code == 0, err
    lineage = json.loads((root / "dist/recommender/prod-2026-06-synthetic/buildenv.json")
                         .read_text())
    assert lineage["evaluation"]
    assert not (root / ".buildenv" / "audit" / "log.jsonl").exists()  # nothing restricted read
