"""Fault suite, builds: processes racing on one pair, SIGKILL at random points, training
processes that outlive their time limit, failures that may not recur, a lost MLflow store.

Everything runs as separate `python -m buildenv` processes (not threads) over one repository,
the way parallel CI jobs share a checkout, its `.buildenv/` and its MLflow store.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from buildrepo import make_build_repo
from conftest import REPO_ROOT, process_alive

from buildenv.compile.artifact import read_lineage, tree_digest

UNHASHED = ("buildenv.json", "buildenv.sig")  # outside the recorded artifact digest

pytestmark = pytest.mark.slow

EXTRA_TRAININGS = """
[tool.buildenv.trainings.spawner]
entry = "train/spawner.py:train"
environments = ["base"]

[tool.buildenv.trainings.flaky]
entry = "train/flaky.py:train"
environments = ["base"]
"""

SPAWNER = '''
import subprocess
import sys
import time
from pathlib import Path


def train(ctx):
    """Starts a worker of its own (as joblib or multiprocessing would), then never ends."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(__file__).with_name("spawner.pid").write_text(str(worker.pid))
    time.sleep(600)
'''

FLAKY = '''
from pathlib import Path

from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def train(ctx):
    if Path(__file__).with_name("flaky.flag").exists():
        raise OSError("the network share is unreachable")
    df = ctx.read("items", columns=["x1", "x2", "y"])
    return make_pipeline(SimpleImputer(), LogisticRegression()).fit(df[["x1", "x2"]], df["y"])
'''


def env_for(extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDENV_ROOT",
                                                            "BUILDENV_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra or {})
    return env


def start(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "buildenv", *args], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(env))


def run(repo: Path, *args: str, env: dict | None = None, timeout: float = 300):
    proc = start(repo, *args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _sandbox_off(root: Path) -> None:
    path = root / "pyproject.toml"
    path.write_text(path.read_text().replace("[tool.buildenv]\n",
                                             '[tool.buildenv]\nsandbox = "off"\n', 1))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_build_repo(tmp_path / "repo")
    with open(root / "pyproject.toml", "a") as handle:
        handle.write(EXTRA_TRAININGS)
    # these faults are the process group's, without a sandbox (whose own tests cover it):
    # the spawner writes its worker's pid beside its module, which a sandbox keeps read-only
    _sandbox_off(root)
    (root / "train" / "spawner.py").write_text(SPAWNER)
    (root / "train" / "flaky.py").write_text(FLAKY)
    code, out, err = run(root, "lock")
    assert code == 0, err
    return root


def versions(repo: Path, name: str, uri: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    uri = uri or f"sqlite:///{repo / '.buildenv' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except Exception:
        return []


def assert_clean(repo: Path, training: str = "lr", env: str = "base") -> None:
    """dist/ holds complete artifacts only; no temp dir anywhere in it."""
    for path in (repo / "dist").rglob("*"):
        assert not path.name.startswith("."), f"left in dist/: {path}"
    art = repo / "dist" / training / env
    if art.exists():
        lineage = read_lineage(art)
        assert lineage is not None, "a partial artifact"
        assert tree_digest(art, exclude=UNHASHED) == lineage["model_digest"]


def temp_dirs(repo: Path) -> list[Path]:
    """Temp dirs left anywhere in the repository's state or outputs."""
    return [p for p in [*(repo / ".buildenv").rglob("*"), *(repo / "dist").rglob("*")]
            if p.is_dir() and ".tmp-" in p.name]


def test_concurrent_identical_builds_train_once_and_register_once(repo):
    procs = [start(repo, "build", "lr", "--env", "base") for _ in range(4)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err
    lines = sorted(out.strip() for _, out, _ in results)
    assert lines == ["lr @ base: built (not built before) -> dist/lr/base, registered lr v1"] + [
        "lr @ base: cached (up to date) -> dist/lr/base, registered lr v1"] * 3
    assert len(versions(repo, "lr")) == 1
    assert_clean(repo)
    assert temp_dirs(repo) == []


def test_concurrent_builds_sharing_one_cache_entry(repo):
    outs = [repo / "out" / str(i) for i in range(3)]
    procs = [start(repo, "build", "lr", "--env", "base", "--out", str(o), "--no-register")
             for o in outs]
    for p in procs:
        code = p.wait(300)
        assert code == 0, p.communicate()
    digests = {read_lineage(o)["model_digest"] for o in outs}
    assert len(digests) == 1
    assert all(tree_digest(o, exclude=UNHASHED) in digests for o in outs)
    assert temp_dirs(repo) == []
    entries = list((repo / ".buildenv" / "cache" / "builds").glob("*/*"))
    assert [e.name.startswith(".") for e in entries] == [False]


def test_out_never_deletes_files_buildenv_did_not_write(repo):
    target = repo / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    code, out, err = run(repo, "build", "lr", "--env", "base", "--out", "mine", "--no-register")
    assert code == 2
    assert ("error[BE767]: --out mine would replace a directory buildenv did not write (it "
            "holds files and no buildenv.json); nothing was deleted") in err
    assert (target / "notes.txt").read_text() == "precious"
    # an artifact buildenv wrote is replaced; one with a foreign file in it is not
    code, out, err = run(repo, "build", "lr", "--env", "base", "--out", "fresh", "--no-register")
    assert code == 0, err
    code, out, err = run(repo, "build", "lr", "--env", "next", "--out", "fresh", "--no-register")
    assert code == 0, err
    assert read_lineage(repo / "fresh")["environment"] == "next"
    (repo / "fresh" / "extra.csv").write_text("1,2\n")
    code, out, err = run(repo, "build", "lr", "--env", "base", "--out", "fresh", "--no-register")
    assert code == 2 and "its files differ from what buildenv wrote there" in err
    assert (repo / "fresh" / "extra.csv").exists()


def test_an_up_to_date_build_sweeps_what_a_killed_build_left(repo):
    """A build killed while it registered leaves a complete artifact and its scratch dir:
    the next build is up to date, and removes that dir all the same."""
    assert run(repo, "build", "lr", "--env", "base", "--no-register")[0] == 0
    made = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from buildenv.core.tempdirs import owned_temp_dir; "
         "d = owned_temp_dir(Path(sys.argv[1]), 'train'); (d / 'model').mkdir(); print(d)",
         str(repo / ".buildenv" / "tmp")], env=env_for(), capture_output=True, text=True,
        check=True)
    left = Path(made.stdout.strip())
    assert left.is_dir()
    code, out, err = run(repo, "build", "lr", "--env", "base", "--no-register")
    assert code == 0 and "up to date" in out + err, out + err
    assert not left.exists()
    assert temp_dirs(repo) == []


def test_sigkill_at_random_points_of_builds(repo, tmp_path):
    """Kill `build` anywhere from start-up to registration: never a partial artifact or a
    temp dir in dist/, never an orphan or duplicate registry version; the next build
    completes and sweeps what the killed one left."""
    rng = random.Random(20261201)
    delays = sorted(rng.uniform(0.3, 9.0) for _ in range(5))
    expected = None
    for i, delay in enumerate(delays):
        uri = f"sqlite:///{tmp_path / f'mlflow-{i}.db'}"  # a fresh store: registration runs too
        shutil.rmtree(repo / "dist", ignore_errors=True)
        proc = start(repo, "build", "lr", "--env", "base", "--no-cache",
                     env={"BUILDENV_TRACKING_URI": uri})
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert_clean(repo)
        assert len(versions(repo, "lr", uri)) <= 1
        code, out, err = run(repo, "build", "lr", "--env", "base", "--no-cache",
                             env={"BUILDENV_TRACKING_URI": uri})
        assert code == 0, f"after a kill at {delay:.1f} s: {out}{err}"
        assert_clean(repo)
        [version] = versions(repo, "lr", uri)
        digest = read_lineage(repo / "dist" / "lr" / "base")["model_digest"]
        assert version.tags["buildenv.artifact_digest"] == digest
        assert expected in (None, digest)  # every completed build: the same bytes
        expected = digest
        assert temp_dirs(repo) == []


def test_timeout_kills_the_trainings_whole_process_group(repo):
    pid_file = repo / "train" / "spawner.pid"
    code, out, err = run(repo, "build", "spawner", "--env", "base", "--no-register",
                         "--timeout", "8")
    assert code == 1
    assert "error[BE302]: training exceeded its time limit of 8 s" in err
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while process_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not process_alive(worker), "the training's own worker outlived the time limit"
    finally:
        if process_alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert_clean(repo, "spawner")


def test_transient_failure_is_not_cached(repo):
    flag = repo / "train" / "flaky.flag"
    flag.write_text("")
    code, out, err = run(repo, "build", "flaky", "--env", "base", "--no-register")
    assert code == 1
    assert "error[BE301]: training raised OSError: the network share is unreachable" in err
    flag.unlink()
    code, out, err = run(repo, "build", "flaky", "--env", "base", "--no-register")
    assert code == 0, err  # retried, not "failed before with the same inputs"
    assert "flaky @ base: built (not built before)" in out


def test_cached_failure_does_not_replay_a_stale_hint(repo):
    (repo / "environments" / "next.yaml").unlink()
    (repo / "environments" / "next.lock.json").unlink()
    code, out, err = run(repo, "build", "forest", "--env", "base", "--no-register")
    assert code == 1
    assert "hint: no environment of the multiverse it is supported" in err
    code, out, err = run(repo, "build", "forest", "--env", "base", "--no-register")
    assert code == 1 and "hint: no environment of the multiverse it is supported" in err
    (repo / "environments" / "trees.yaml").write_text(
        "name: trees\nextends: base\nserving:\n  ops: [sklearn.*]\n")
    code, out, err = run(repo, "build", "forest", "--env", "base", "--no-register")
    assert code == 1
    assert "hint: it is supported in: trees" in err
    assert "no environment of the multiverse" not in err


def test_lost_store_means_registration_again(repo):
    code, out, err = run(repo, "build", "lr", "--env", "base")
    assert code == 0 and "registered lr v1" in out, err
    (repo / ".buildenv" / "mlflow.db").unlink()
    shutil.rmtree(repo / ".buildenv" / "mlartifacts")
    code, out, err = run(repo, "build", "lr", "--env", "base")
    assert code == 0, err
    assert "lr @ base: cached (up to date) -> dist/lr/base, registered lr v1" in out
    assert "note[BE770]: lr v1 was registered for this artifact before, but" in err
    [version] = versions(repo, "lr")
    assert version.tags["buildenv.artifact_digest"] == read_lineage(
        repo / "dist" / "lr" / "base")["model_digest"]
    code, out, err = run(repo, "build", "lr", "--env", "base")
    assert code == 0 and "BE770" not in err and len(versions(repo, "lr")) == 1
    marker = next((repo / ".buildenv" / "registered").iterdir())
    assert str(json.loads(marker.read_text())["version"]) == "1"


def test_register_command(repo):
    code, out, err = run(repo, "build", "lr", "--env", "base", "--out", "art", "--no-register")
    assert code == 0, err
    code, out, err = run(repo, "register", "art", "--training", "lr", "--env", "base")
    assert (code, out.strip()) == (0, "lr @ base: registered lr v1"), err
    code, out, err = run(repo, "register", "art", "--training", "lr", "--env", "base")
    assert (code, out.strip()) == (0, "lr @ base: already registered as lr v1"), err
    code, out, err = run(repo, "register", "art", "--training", "lr", "--env", "next")
    assert code == 2
    assert "error[BE771]: art is not an artifact of lr @ next (lineage of lr @ base)" in err
    (repo / "art" / "requirements.txt").write_text("evil\n")
    code, out, err = run(repo, "register", "art", "--training", "lr", "--env", "base")
    assert code == 1 and "error[BE761]: the artifact at art: its files hash to" in err
    assert len(versions(repo, "lr")) == 1


def test_sigterm_stops_the_build_and_the_trainings_workers(repo):
    pid_file = repo / "train" / "spawner.pid"
    proc = start(repo, "build", "spawner", "--env", "base", "--no-register")
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    worker = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)  # a cancelled CI job
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    deadline = time.monotonic() + 10
    while process_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not process_alive(worker), "the training's own worker outlived the build"
    finally:
        if process_alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert_clean(repo, "spawner")
    assert temp_dirs(repo) == []


def test_a_kill_while_mlflow_creates_its_store_leaves_no_half_made_store(tmp_path):
    """MLflow makes a new sqlite store in many steps: killed between them, the store could not
    be opened again ("table ... already exists"). buildenv makes it aside and renames it."""
    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    db = tmp_path / ".buildenv" / "mlflow.db"
    code = ("from buildenv.compile.registry import client\n"
            "from buildenv.core.project import Project\n"
            f"client(Project.discover({str(tmp_path)!r}))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUILDENV_TRACKING_URI": f"sqlite:///{db}"}
    env.pop("BUILDENV_ROOT", None)
    rng = random.Random(7)
    for delay in sorted(rng.uniform(1.0, 6.0) for _ in range(4)):
        db.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert not db.exists() or subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, timeout=300).returncode == 0
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          timeout=300).returncode == 0
    assert db.exists() and not list(db.parent.glob("mlflow.db.init-*"))
