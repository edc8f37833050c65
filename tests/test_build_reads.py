"""A training that reads a repository file (its hyper-parameters in `config/params.yaml`) is
rebuilt when that file changes, and a failure that file caused is not replayed once it is
fixed: the files the training read are part of its code digest (compile/cache.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from buildrepo import _table, make_build_repo

from buildenv.compile.cache import explain_rebuild, with_reads
from buildenv.core.canonical import digest_json

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

TRAININGS = """
[tool.buildenv.trainings.tuned]
entry = "train/tuned.py:train"
environments = ["base"]

[tool.buildenv.trainings.picky]
entry = "train/picky.py:train"
environments = ["base"]

[tool.buildenv.trainings.hidden]
entry = "train/lr.py:train"
environments = ["hidden"]

[tool.buildenv.trainings.sampler]
entry = "train/sampler.py:train"
environments = ["base"]
threads = 1  # a core left for the pre-check, forked beside the fit (on two cores or more)
"""

# reads its regularisation from a YAML file (parsed by hand: no YAML library needed)
TUNED = """
from pathlib import Path

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def params(name):
    text = (Path(__file__).resolve().parents[1] / "config" / name).read_text()
    return {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def train(ctx):
    c = float(params("params.yaml")["C"])
    if c <= 0:
        raise ValueError(f"C must be positive, not {c}")
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prep = ColumnTransformer([("num", numeric, ["x1", "x2"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"])])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(C=c, random_state=ctx.seed))])
    return model.fit(df[["x1", "x2", "cat"]], df["y"])
"""

PICKY = TUNED.replace('params("params.yaml")', 'params("picky.yaml")')
# its sample run (the pre-check's, forked beside the fit when a core is free) reads a file the
# full fit does not
SAMPLER = TUNED.replace('params("params.yaml")',
                        'params("sample.yaml" if ctx.sample_rows else "params.yaml")')


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def run(repo: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo,
                          capture_output=True, text=True, timeout=600, env=child_env())
    return proc.returncode, proc.stdout, proc.stderr


def build(repo: Path, training: str) -> tuple[int, str]:
    code, out, err = run(repo, "build", training, "--env", "base", "--no-register")
    return code, out + err


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_build_repo(tmp_path_factory.mktemp("readsrepo") / "repo")
    # more rows than twice the pre-check's sample: the pre-check runs
    pq.write_table(_table(5000, 1), root / "data" / "items.parquet")
    with (root / "pyproject.toml").open("a") as f:
        f.write(TRAININGS)
    (root / "train" / "tuned.py").write_text(TUNED)
    (root / "environments" / "hidden.yaml").write_text(
        "name: hidden\nextends: base\nprivacy:\n  restricted: [items]\n")
    (root / "train" / "picky.py").write_text(PICKY)
    (root / "train" / "sampler.py").write_text(SAMPLER)
    (root / "config").mkdir()
    (root / "config" / "params.yaml").write_text("C: 1.0\n")
    (root / "config" / "picky.yaml").write_text("C: -1\n")
    (root / "config" / "sample.yaml").write_text("C: 2.0\n")
    code, _, err = run(root, "lock")
    assert code == 0, err
    return root


def lineage(repo: Path, training: str) -> dict:
    return json.loads((repo / "dist" / training / "base" / "buildenv.json").read_text())


def test_editing_a_file_the_training_reads_rebuilds_it_and_says_why(repo):
    params = repo / "config" / "params.yaml"
    code, out = build(repo, "tuned")
    assert code == 0 and "tuned @ base: built" in out, out
    first = lineage(repo, "tuned")
    assert list(first["files_read"]) == ["config/params.yaml"]
    assert first["files_read"] == first["cache_parts"]["files_read"]
    assert first["cache_key"] == digest_json(first["cache_parts"])

    code, out = build(repo, "tuned")
    assert code == 0 and "tuned @ base: cached (up to date)" in out, out

    params.write_text("C: 0.001\n")
    code, out = build(repo, "tuned")
    assert code == 0 and "tuned @ base: built" in out, out
    assert "code file config/params.yaml changed" in out, out
    second = lineage(repo, "tuned")
    assert second["model_digest"] != first["model_digest"]
    assert second["cache_key"] != first["cache_key"]
    assert second["files_read"] != first["files_read"]

    params.write_text("C: 1.0\n")  # back as it was: that artifact is in the cache
    code, out = build(repo, "tuned")
    assert code == 0 and "tuned @ base: cached (restored from cache)" in out, out
    assert lineage(repo, "tuned")["model_digest"] == first["model_digest"]

    params.write_text("C: 0.001\n")  # without dist/, the cache knows which files to hash
    shutil.rmtree(repo / "dist" / "tuned")
    code, out = build(repo, "tuned")
    assert code == 0 and "tuned @ base: cached (restored from cache)" in out, out
    assert lineage(repo, "tuned")["model_digest"] == second["model_digest"]


def pair(repo: Path, training: str) -> dict:
    """How the build of `training` ended: status, reason, first error."""
    _, out, err = run(repo, "build", training, "--env", "base", "--no-register",
                      "--format", "json")
    [found] = json.loads(out)["pairs"]
    return found


def test_a_failure_the_file_caused_is_not_replayed_once_it_is_fixed(repo):
    picky = repo / "config" / "picky.yaml"
    first = pair(repo, "picky")
    assert first["status"] == "failed" and "C must be positive" in first["first_error"], first
    assert first["reason"] == "train failed (BE301)", first
    again = pair(repo, "picky")
    assert again["reason"] == "failed before with the same inputs (BE301)", again

    picky.write_text("C: 0.5\n")
    fixed = pair(repo, "picky")
    assert fixed["status"] == "built", fixed
    assert list(lineage(repo, "picky")["files_read"]) == ["config/picky.yaml"]


def test_what_the_pre_check_read_is_pinned_too(repo):
    code, out = build(repo, "sampler")
    assert code == 0, out
    assert lineage(repo, "sampler")["precheck"]["status"] == "passed"
    assert list(lineage(repo, "sampler")["files_read"]) == [
        "config/params.yaml", "config/sample.yaml"]
    (repo / "config" / "sample.yaml").write_text("C: 3.0\n")
    code, out = build(repo, "sampler")
    assert code == 0 and "built (code file config/sample.yaml changed)" in out, out


def test_a_training_that_reads_no_file_keeps_its_key(repo):
    code, out = build(repo, "lr")
    assert code == 0, out
    found = lineage(repo, "lr")
    assert "files_read" not in found and "files_read" not in found["cache_parts"]
    assert found["cache_key"] == digest_json(found["cache_parts"])


def test_what_buildenv_reads_for_the_training_is_not_its_code(repo):
    """Reading a restricted dataset, the gate reads pyproject.toml: from buildenv's frames (in
    the toolchain's runner, imported through a link), so not the training's."""
    code, out, err = run(repo, "build", "hidden", "--env", "hidden", "--no-register")
    assert code == 0, out + err
    found = json.loads((repo / "dist" / "hidden" / "hidden" / "buildenv.json").read_text())
    assert "files_read" not in found


def test_explain_rebuild_names_the_files_read():
    parts = {"code_digest": "sha256:c", "datasets": {}}
    old = with_reads(parts, {"config/a.yaml": "sha256:1", "config/b.txt": None})
    new = with_reads(parts, {"config/a.yaml": "sha256:2", "config/b.txt": "sha256:3"})
    assert with_reads(parts, {}) is parts
    assert old["code_digest"] != parts["code_digest"] != new["code_digest"]
    assert explain_rebuild({"cache_parts": old, "code_files": {}}, {**new, "_files": {}}) == (
        "code file config/a.yaml changed, code file config/b.txt now exists")
