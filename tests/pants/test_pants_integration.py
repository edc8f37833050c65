"""The real `./pants` (Pants 2.17 + the buildenv plugin) on a small repo.

Slow: each step starts Pants without pantsd (~10 s) and the first builds the
requirements PEX (~1 min when Pants' caches are cold).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pants_toy_repo import ToyRepo, make_toy_repo

from buildenv.compile.isolation import detect

pytestmark = pytest.mark.slow

PAIRS = ["toy a", "toy b", "toy2 a", "toy2 b"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ToyRepo:
    base = tmp_path_factory.mktemp("pants")
    repo = make_toy_repo(base / "repo", base / "trainings.log")
    repo.pants("tailor", "::")
    return repo


def test_tailor_writes_targets(repo: ToyRepo) -> None:
    envs = (repo.root / "environments/BUILD").read_text()
    assert 'ml_environment(\n    name="a",\n)' in envs
    assert 'ml_environment(\n    name="b",\n)' in envs
    models = (repo.root / "models/BUILD").read_text()
    # entry and environments stay in pyproject.toml: the BUILD file only names the training.
    assert 'ml_training(\n    name="toy",\n)' in models
    assert "python_sources()" in models
    listed = repo.pants("list", "models:").stdout.split()
    assert {"models:toy#a", "models:toy#b", "models:toy2#a", "models:toy2#b"} <= set(listed)


def test_clean_build_equals_buildenv_build(repo: ToyRepo) -> None:
    repo.trained()
    repo.pants("build", "::")
    assert repo.trained() == PAIRS
    for pair in ("toy/a", "toy/b", "toy2/a", "toy2/b"):
        assert (repo.root / "dist" / pair / "buildenv.json").is_file()

    # `pants package` writes what `buildenv build` writes: the same files, the same model
    # byte for byte. Only the toolchain differs, by design (under Pants the training's resolve
    # is the sandbox's PEX; buildenv resolves an environment of its own), and with it what
    # records or derives from it: the lineage's `toolchain`, the cache key, MLmodel's uuid.
    out = repo.root.parent / "direct"
    repo.buildenv("build", "toy", "--env", "b", "--out", str(out), "--no-register", "--no-cache")
    repo.trained()
    ours, theirs = _tree(repo.root / "dist/toy/b"), _tree(out)
    assert ours.keys() == theirs.keys()
    differing = {name: _diff(theirs[name], ours[name]) for name in ours if ours[name] != theirs[name]}
    # the model card names the toolchain's lock, and its serial number follows the cache key
    assert set(differing) <= {"MLmodel", "buildenv.json", "model_card.md", "model_card.json"}, \
        "\n".join(differing.values())
    assert _lines(ours["MLmodel"], "model_uuid:") == _lines(theirs["MLmodel"], "model_uuid:")
    assert _lines(ours["model_card.md"], "- trained with:") == \
        _lines(theirs["model_card.md"], "- trained with:")
    cards = [json.loads(tree["model_card.json"]) for tree in (ours, theirs)]
    for card in cards:
        card.pop("serialNumber")
    assert cards[0] == cards[1]
    pants, direct = json.loads(ours["buildenv.json"]), json.loads(theirs["buildenv.json"])
    assert (pants["toolchain"]["mode"], direct["toolchain"]["mode"]) == ("interpreter", "resolve")
    assert pants["libraries"] == direct["libraries"]  # the model's libraries, same versions
    for lineage in (pants, direct):
        for key in ("toolchain", "cache_key", "cache_parts", "model_digest"):
            lineage.pop(key)
    assert pants == direct


def test_noop_rebuild_trains_nothing(repo: ToyRepo) -> None:
    repo.trained()
    proc = repo.pants("build", "::")
    assert repo.trained() == []
    assert "buildenv succeeded" in proc.stderr


def test_editing_one_environment_rebuilds_only_its_pairs(repo: ToyRepo) -> None:
    path = repo.root / "environments/b.yaml"
    path.write_text(path.read_text().replace("range: [-100, 100]", "range: [-50, 50]"))
    repo.buildenv("lock", "b")
    repo.trained()
    repo.pants("package", "::")
    assert repo.trained() == ["toy b", "toy2 b"]


def test_new_dataset_version_rebuilds_only_pairs_that_read_it(repo: ToyRepo) -> None:
    repo.write_items("data/items-v2.parquet", rows=250, shift=1.0)
    repo.buildenv("lock", "b")
    repo.trained()
    repo.pants("package", "::")
    assert repo.trained() == ["toy b", "toy2 b"]


def test_check_failure_is_a_clean_diagnostic(repo: ToyRepo) -> None:
    repo.write("models/typo/train.py", (
        "def train(ctx):\n"
        "    df = ctx.read('items', columns=['x', 'y', 'xx'])\n"
        "    return None\n"))
    repo.write("models/typo/BUILD", (
        "python_sources(name='src')\n\n"
        "ml_training(name='typo', entry='models/typo/train.py:train', environments=['a'])\n"))
    proc = repo.pants("check", "models/typo::", check=False)
    assert proc.returncode != 0
    assert "models/typo/train.py:2:" in proc.stderr
    assert "error[BE102]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "buildenv failed" in proc.stderr


def test_build_shows_every_pairs_failed_checks(repo: ToyRepo) -> None:
    """`build` is `check package`, and the check goal is what shows every failing pair at once
    (file, line, hint): `package` alone stops at the first pair whose `buildenv build` fails
    and cancels the others (measured: one diagnostic of three), so the alias keeps `check`."""
    for name, column in (("typo_x", "xx"), ("typo_y", "yy")):
        repo.write(f"models/{name}/train.py", (
            "def train(ctx):\n"
            f"    df = ctx.read('items', columns=['x', 'y', {column!r}])\n"
            "    return None\n"))
        repo.write(f"models/{name}/BUILD", (
            "python_sources(name='src')\n\n"
            f"ml_training(name='{name}', entry='models/{name}/train.py:train', "
            "environments=['a', 'b'])\n"))
    proc = repo.pants("build", "models/typo_x::", "models/typo_y::", check=False)
    assert proc.returncode != 0
    for column, hint in (("xx", "x"), ("yy", "y")):
        for env in ("a", "b"):
            assert (f"error[BE102]: column '{column}' is not in dataset 'items' of "
                    f"environment {env}\n  hint: did you mean '{hint}'?") in proc.stderr
    assert proc.stderr.count("models/typo_x/train.py:2:") == 2
    assert proc.stderr.count("models/typo_y/train.py:2:") == 2
    assert "Traceback" not in proc.stderr
    assert "Starting: buildenv build" not in proc.stderr  # nothing trained


def test_training_only_feature_fails_the_build(repo: ToyRepo) -> None:
    repo.write("models/leaky/train.py", (
        "from sklearn.linear_model import LogisticRegression\n\n"
        "def train(ctx):\n"
        "    df = ctx.read('items', columns=['secret', 'y'])\n"
        "    return LogisticRegression().fit(df[['secret']], df['y'])\n"))
    repo.write("models/leaky/BUILD", (
        "python_sources(name='src')\n\n"
        "ml_training(name='leaky', entry='models/leaky/train.py:train', environments=['a'])\n"))
    proc = repo.pants("build", "models/leaky::", check=False)
    assert proc.returncode != 0
    assert "error[BE401]" in proc.stderr
    assert "'secret'" in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr


def _lines(data: bytes, without: str) -> list[str]:
    return [line for line in data.decode().splitlines() if not line.startswith(without)]
def test_the_training_is_sandboxed_inside_pants(repo: ToyRepo) -> None:
    """Pants' sandbox is a directory, not a namespace: the real repository's data is at its
    absolute path. buildenv's own sandbox hides it, and records what applied."""
    data = repo.root / "data" / "items-v1.parquet"
    repo.write("models/spy/train.py", (
        "import pandas as pd\n\n"
        "def train(ctx):\n"
        f"    return pd.read_parquet({str(data)!r})\n"))
    repo.write("models/spy/BUILD", (
        "python_sources(name='src')\n\n"
        "ml_training(name='spy', entry='models/spy/train.py:train', environments=['a'])\n"))
    repo.write("models/sealed/train.py", (
        "from sklearn.linear_model import LogisticRegression\n\n"
        "def train(ctx):\n"
        "    df = ctx.read('items', columns=['x', 'y'])\n"
        "    return LogisticRegression().fit(df[['x']], df['y'])\n"))
    repo.write("models/sealed/BUILD", (
        "python_sources(name='src')\n\n"
        "ml_training(name='sealed', entry='models/sealed/train.py:train', environments=['a'])\n"))
    proc = repo.pants("package", "models/spy::", check=False)
    assert proc.returncode != 0
    assert ("models/spy/train.py:4: error[BE322]: the training opened "
            f"'{data}' directly") in proc.stderr
    repo.pants("package", "models/sealed::")
    lineage = json.loads((repo.root / "dist/sealed/a/buildenv.json").read_text())
    assert lineage["isolation"]["mechanism"] == detect().mechanism
    assert lineage["isolation"]["data"] == "handed-over descriptors"


def _diff(a: bytes, b: bytes) -> str:
    import difflib

    return "".join(difflib.unified_diff(a.decode(errors="replace").splitlines(True),
                                        b.decode(errors="replace").splitlines(True),
                                        "buildenv build", "pants package"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
