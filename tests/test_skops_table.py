"""skops' scikit-learn table kept per installation (`training.skops_table`): the runner imports
skops with it instead of importing every scikit-learn module, trusts exactly the same types,
writes the same bytes, and builds the table the slow way whenever its key is not the
installation's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from familyrepo import make_family_repo

from buildenv.training import skops_table

# Run in a fresh interpreter: which modules skops' import loads is the point. `first` is what
# the process imports before skops (a training imports scikit-learn's estimator first).
PROBE = r"""
import hashlib, json, sys
table = json.loads(sys.argv[1]) if sys.argv[1] != "-" else None
first = sys.argv[2]
if first == "sklearn":
    import pandas  # noqa: F401
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401
from buildenv.training import skops_table
from buildenv.training.skops_format import dumps, untrusted_in
skops_table.offer(table)
sio = skops_table.import_with()
from skops.io import _trusted_types as t
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)); y = X[:, 0] + X[:, 1] > 0
model = make_pipeline(StandardScaler(),
                      HistGradientBoostingClassifier(max_iter=5, random_state=0)).fit(X, y)
data = dumps(model)
tables = {name: list(getattr(t, name)) for name in dir(t) if name.endswith("_NAMES")}
print(json.dumps({
    "tables": tables, "digest": hashlib.sha256(data).hexdigest(),
    "untrusted": untrusted_in(data), "fresh": skops_table.fresh(),
    "walked": "sklearn.semi_supervised" in sys.modules,
    "stand_in_left": sys.modules["sklearn.utils"].all_estimators.__module__,
}))
"""


MARK = "sklearn.not_a_module.NotAnEstimator"


def probe(table: dict | None, first: str = "sklearn") -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(table) if table else "-", first],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def slow() -> dict:
    return probe(None)


def test_the_slow_path_hands_back_the_table_with_this_installations_key(slow):
    assert slow["walked"]  # skops walked every scikit-learn module
    fresh = slow["fresh"]
    assert fresh["key"] == skops_table.key()
    assert fresh["names"] == slow["tables"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]
    assert "sklearn.ensemble._hist_gradient_boosting.gradient_boosting."\
        "HistGradientBoostingClassifier" in fresh["names"]


@pytest.mark.parametrize("first", ["sklearn", "nothing"])
def test_the_cached_table_trusts_the_same_types_and_writes_the_same_bytes(slow, first):
    before = slow if first == "sklearn" else probe(None, first)
    fast = probe(before["fresh"], first)
    assert not fast["walked"]  # fails without the table: every module imported again
    assert fast["fresh"] is None  # nothing new for the build to store
    assert fast["tables"] == before["tables"]  # every one of skops' trusted-type tables
    assert fast["digest"] == before["digest"] and fast["untrusted"] == before["untrusted"]
    assert fast["stand_in_left"] == "sklearn.utils.discovery"  # scikit-learn's own again


@pytest.mark.parametrize("change", ["skops", "scikit-learn", "python", "scikit-learn at"])
def test_a_table_of_another_version_or_installation_is_not_used(slow, change):
    stale = {"key": {**slow["fresh"]["key"], change: "0.0.0"},
             "names": slow["fresh"]["names"][:3]}
    got = probe(stale)
    assert got["walked"] and got["tables"] == slow["tables"]
    assert got["fresh"]["key"] == skops_table.key()  # the build replaces the stale one


@pytest.mark.parametrize("bad", [{"names": "x"}, {"key": None, "names": []}, [], "text",
                                 {"names": [1, 2]}, {"names": ["builtins.eval"]},
                                 {"names": ["sklearn.linear_model.LogisticRegression",
                                            "os.system"]}])
def test_a_malformed_table_is_ignored(slow, bad):
    if isinstance(bad, dict) and "key" not in bad:
        bad = {**bad, "key": slow["fresh"]["key"]}
    got = probe(bad) if isinstance(bad, dict) else probe(None)
    assert got["walked"] and got["tables"] == slow["tables"]


def test_store_and_cached_per_interpreter(tmp_path, monkeypatch, slow):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert skops_table.cached(sys.executable) is None
    skops_table.store(sys.executable, {"key": {"x": "1"}, "names": "not a list"})
    skops_table.store(sys.executable, None)
    assert skops_table.cached(sys.executable) is None  # nothing malformed is kept
    skops_table.store(sys.executable, slow["fresh"])
    assert skops_table.cached(sys.executable) == slow["fresh"]
    assert skops_table.cached("/another/python") is None
    files = list((tmp_path / "cache" / "buildenv" / "skops-types").iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".tmp")
    os.chmod(files[0], 0o664)  # another user of the group could have written it
    assert skops_table.cached(sys.executable) is None
    os.chmod(files[0], 0o600)
    os.chmod(files[0].parent, 0o777)
    assert skops_table.cached(sys.executable) is None
    os.chmod(files[0].parent, 0o700)
    assert skops_table.cached(sys.executable) == slow["fresh"]
    files[0].write_text("{truncated")
    assert skops_table.cached(sys.executable) is None  # unreadable: the slow path, again


@pytest.mark.slow
def test_builds_store_the_table_and_the_next_build_uses_it(tmp_path):
    """Through `buildenv build`: the first (sandboxed) runner builds the table, the build stores
    it, the second runner gets it in its request; both artifacts are the same bytes."""
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    repo = make_family_repo(tmp_path / "repo")

    def cli(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr

    cli("lock")
    stored = cache / "buildenv" / "skops-types"
    outs = [tmp_path / "first", tmp_path / "second"]
    cli("build", "sk-lr", "--env", "sk", "--no-register", "--no-cache", "--out", str(outs[0]))
    assert len(list(stored.iterdir())) == 1
    kept = next(iter(stored.iterdir()))
    table = json.loads(kept.read_text())
    marked = [*table["names"], MARK]  # a name no scikit-learn class has: trusts nothing more
    kept.write_text(json.dumps({**table, "names": marked}))
    cli("build", "sk-lr", "--env", "sk", "--no-register", "--no-cache", "--out", str(outs[1]))
    assert _files(outs[0]) == _files(outs[1])
    # the second runner took the stored table and so handed back nothing to store: the file
    # still holds the mark (a runner that walked scikit-learn would have replaced it)
    assert json.loads(kept.read_text())["names"] == marked


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
