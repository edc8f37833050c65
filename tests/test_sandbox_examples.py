"""Every pair of the example multiverse (each training, each model family) builds the same model
files sandboxed as unsandboxed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_repo import sandbox_usable

from buildenv.compile.isolation import detect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(repo: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=3600)
    return proc.returncode, proc.stdout, proc.stderr


RECORDS = ("buildenv.json", "model_card.md", "model_card.json")  # they say what applied


def _model_files(pair: Path) -> dict[str, bytes]:
    return {p.relative_to(pair).as_posix(): p.read_bytes() for p in sorted(pair.rglob("*"))
            if p.is_file() and p.name not in RECORDS}


def test_every_example_builds_the_same_model_with_and_without_the_sandbox(tmp_path):
    if not sandbox_usable("any"):
        pytest.skip("no sandbox on this machine")
    repo = tmp_path / "repo"
    for name in ("environments", "data", "examples"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    (repo / "pyproject.toml").write_text(pyproject)
    root_env = repo / "environments" / "prod-2026-06.yaml"  # so that "off" may build it too
    root_env.write_text(root_env.read_text().replace(
        "  restricted: [users, ratings]\n", "  restricted: [users, ratings]\n  sandbox: optional\n"))
    assert _run(repo, "lock")[0] == 0
    built = {}
    for policy in ("preferred", "off"):
        (repo / "pyproject.toml").write_text(pyproject.replace(
            "[tool.buildenv]\n", f'[tool.buildenv]\nsandbox = "{policy}"\n', 1))
        code, out, err = _run(repo, "build", "--all", "--no-register", "--no-cache",
                              "--no-progress")
        matrix = json.loads((repo / "dist" / "matrix.json").read_text())
        assert code == 0, err + out
        built[policy] = {}
        for pair in matrix["pairs"]:
            folder = repo / "dist" / pair["training"] / pair["environment"]
            lineage = json.loads((folder / "buildenv.json").read_text())
            mechanism = detect().mechanism if policy == "preferred" else "none"
            assert lineage["isolation"]["mechanism"] == mechanism
            card = (folder / "model_card.md").read_text()
            assert f"- the training ran with sandbox `{mechanism}`" in card, card
            bom = json.loads((folder / "model_card.json").read_text())
            properties = {p["name"]: p["value"]
                          for p in bom["components"][0]["modelCard"]["properties"]}
            assert json.loads(properties["buildenv:isolation"]) == lineage["isolation"]
            built[policy][(pair["training"], pair["environment"])] = _model_files(folder)
        shutil.rmtree(repo / "dist")
    assert len(built["off"]) >= 7  # recommender, genre-tagger, critic-aware, boosted pairs
    assert built["preferred"].keys() == built["off"].keys()
    for pair, files in built["off"].items():
        assert built["preferred"][pair] == files, pair
