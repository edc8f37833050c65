"""Toolchains: each training runs in its own locked environment (docs/toolchains.md).

Real uv, real environments. Most tests share the suite's content-addressed store (conftest's
TOOLCHAINS), so an environment is installed once per machine; the tests of the store itself
(creation, concurrency, kills) use a store of their own.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli, write_repo

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.toolchain import toolchain as toolchain_module
from buildenv.toolchain.pins import RUNNER
from buildenv.toolchain.requirements import Wanted, training_requirements
from buildenv.toolchain.store import MARKER, Store
from buildenv.toolchain.toolchain import resolve_lock, training_toolchain

pytestmark = pytest.mark.slow

WHERE = '''\
"""Reports where it runs: which interpreter, and whether buildenv's own pins are visible."""

import sys

from sklearn.linear_model import LogisticRegression


def train(ctx):
    try:
        import typer  # noqa: F401  (installed beside buildenv, in no training's lock)
        ctx.log_param("typer", "visible")
    except ImportError:
        ctx.log_param("typer", "absent")
    ctx.log_param("python", sys.executable)
    movies = ctx.read("movies", columns=["movie_id", "runtime_minutes"])
    ratings = ctx.read("ratings", columns=["movie_id", "liked"])
    df = ratings.merge(movies, on="movie_id").fillna(0.0)
    return LogisticRegression(random_state=ctx.seed).fit(df[["runtime_minutes"]], df["liked"])
'''


def pyproject(extra: str = "", toolchains: str = "") -> str:
    """The test repo's pyproject.toml; `extra` starts at line 11 (inside the training's table)."""
    return "\n".join(["[project]", 'name = "demo-repo"', 'version = "0.0.0"', "",
                      "[tool.buildenv]", 'environments_dir = "environments"', "",
                      "[tool.buildenv.trainings.demo]", 'entry = "train/demo.py:train"',
                      'environments = ["*"]', extra, "", toolchains, ""])


def locked_repo(root: Path, extra: str = "", toolchains: str = "") -> Path:
    write_repo(root, files={"pyproject.toml": pyproject(extra, toolchains),
                            "train/demo.py": WHERE}, lock=True)
    return root


def set_training(root: Path, extra: str, toolchains: str = "") -> None:
    (root / "pyproject.toml").write_text(pyproject(extra, toolchains))


def build(root: Path, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    return invoke_cli(["build", "demo", "--env", "base", "--no-register", *args], root, env=env)


def lineage(root: Path) -> dict:
    return json.loads((root / "dist/demo/base/buildenv.json").read_text())


# --- what goes into a training's environment ---------------------------------------------------

def test_default_requirements_are_servings_then_the_stacks_then_the_runners(repo: Path):
    project = Project.discover(repo)
    res = Multiverse(project).resolve("base")
    wanted = training_requirements(project, "demo", project.training("demo"), res)
    assert wanted[0] == Wanted("scikit-learn>=1.6,<2", "scikit-learn", "serving.requirements",
                               "environments/base.yaml", 22)
    runner = [w for w in wanted if w.origin == "buildenv's runner"]
    # scikit-learn is the environment's choice: buildenv's own pin of it is left out
    assert [w.text for w in runner] == [f"{n}=={v}" for n, v in RUNNER.items()
                                        if n != "scikit-learn"]


def test_a_trainings_requirement_replaces_buildenvs_pin_of_the_same_distribution(tmp_path):
    root = write_repo(tmp_path, files={"pyproject.toml": pyproject(
        'requirements = ["xgboost-cpu==3.2.0",\n  "Pandas>=2.2"]')})
    project = Project.discover(root)
    res = Multiverse(project).resolve("base")
    wanted = training_requirements(project, "demo", project.training("demo"), res)
    assert [(w.text, w.path, w.line) for w in wanted[:2]] == [
        ("xgboost-cpu==3.2.0", "pyproject.toml", 11), ("Pandas>=2.2", "pyproject.toml", 12)]
    names = [w.name for w in wanted]
    assert names.count("pandas") == 1 and "scikit-learn" in names  # no serving default now


def test_a_resolution_is_reused_until_its_inputs_change(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDENV_TOOLCHAINS_DIR", str(tmp_path / "store"))
    project = Project.discover(write_repo(tmp_path / "repo"))
    calls = []
    real = toolchain_module.run_uv
    monkeypatch.setattr(toolchain_module, "run_uv", lambda *a, **k: calls.append(a) or real(
        *a, **k))
    six = [Wanted("six==1.17.0", "six", "test")]
    first = resolve_lock(project, six, "test")
    assert resolve_lock(project, six, "test").text == first.text and len(calls) == 1
    assert first.packages == {"six": "1.17.0"} and first.hashed
    resolve_lock(project, [Wanted("six", "six", "test")], "test")  # another input
    assert len(calls) == 2


# --- the training runs in its environment, not in buildenv's -----------------------------------

def test_the_training_runs_in_its_locked_environment(tmp_path):
    root = locked_repo(tmp_path)
    code, out, err = build(root)
    assert code == 0, out + err
    data = lineage(root)
    project = Project.discover(root)
    env_python = Path(data["params"]["python"])
    assert env_python.is_relative_to(project.toolchains_dir / "envs")
    assert data["params"]["typer"] == "absent"  # buildenv's own pins are not on its path
    toolchain = data["toolchain"]
    assert toolchain["mode"] == "resolve" and toolchain["source"] == "resolved"
    lock = (env_python.parents[1] / "requirements.lock").read_text()
    assert toolchain["lock"] == toolchain_module.parse_lock(lock).digest
    assert toolchain["packages"]["pydantic"] == RUNNER["pydantic"]
    assert data["libraries"]["scikit-learn"] == toolchain["packages"]["scikit-learn"]
    assert data["cache_parts"]["toolchain"] == toolchain["lock"]
    assert data["cache_parts"]["libraries"] == toolchain["packages"]


def test_a_store_inside_the_repository_serves_a_sandboxed_training(tmp_path):
    """The default store is `.buildenv/toolchains/`, inside the state directory the sandbox
    hides from trainings: the runner's interpreter, its directory and its bytecode cache are
    shown there (read-only), and importing from them is not a direct access (BE322)."""
    from sandbox_repo import sandbox_usable

    if not sandbox_usable("any"):
        pytest.skip("no sandbox on this machine")
    root = locked_repo(tmp_path)
    code, out, err = build(root, env={"BUILDENV_TOOLCHAINS_DIR": ""})
    assert code == 0, out + err
    data = lineage(root)
    assert Path(data["params"]["python"]).is_relative_to(root / ".buildenv" / "toolchains")
    assert data["isolation"]["mechanism"] != "none"
    # The sandboxed runner could not write its bytecode: the build compiled what it imported
    # from source into the store's cache (the environment's and the standard library's
    # modules, never the repository's), so the next build reads bytecode.
    prefix = root / ".buildenv" / "toolchains" / "pycache"
    tag = sys.implementation.cache_tag

    def cached(source: Path) -> bool:
        return (prefix / source.parent.relative_to("/") / f"{source.stem}.{tag}.pyc").is_file()

    site = next(Path(data["params"]["python"]).parent.parent.glob("lib/python*/site-packages"))
    assert cached(site / "sklearn" / "__init__.py")
    assert cached(Path(json.__file__))
    mirrored = prefix / root.relative_to("/")
    assert not [p for p in mirrored.rglob("*.pyc") if ".buildenv" not in p.relative_to(
        mirrored).parts]  # the training's own modules stay out


def test_interpreter_mode_runs_the_training_in_buildenvs_interpreter(tmp_path):
    root = locked_repo(tmp_path, toolchains='[tool.buildenv.toolchains]\nmode = "interpreter"\n')
    code, out, err = build(root)
    assert code == 0, out + err
    data = lineage(root)
    assert Path(data["params"]["python"]).resolve() == Path(sys.executable).resolve()
    assert data["toolchain"]["mode"] == "interpreter"
    from importlib import metadata

    assert data["toolchain"]["packages"]["typer"] == metadata.version("typer")


def test_a_changed_library_rebuilds_and_the_reason_names_it(tmp_path):
    root = locked_repo(tmp_path, 'requirements = ["scikit-learn==1.8.0"]')
    code, out, err = build(root)
    assert code == 0, out + err
    assert lineage(root)["libraries"]["scikit-learn"] == "1.8.0"
    set_training(root, 'requirements = ["scikit-learn==1.9.1"]')
    code, out, err = build(root)
    assert code == 0, out + err
    # the model's own library first, then what came with it
    assert "built (library scikit-learn changed (1.8.0 -> 1.9.1), library narwhals added" in out
    assert lineage(root)["libraries"]["scikit-learn"] == "1.9.1"
    set_training(root, 'requirements = ["scikit-learn==1.8.0"]')
    code, out, err = build(root)
    assert code == 0 and "cached (restored from cache)" in out, out + err
    assert lineage(root)["libraries"]["scikit-learn"] == "1.8.0"


# --- bad input: a diagnostic, exit 2, no artifact, nothing half-built ------------------------

def test_a_requirement_the_serving_stack_forbids_is_refused_before_training(tmp_path):
    root = locked_repo(tmp_path, 'requirements = ["scikit-learn==1.9.1"]')
    yaml = root / "environments/base.yaml"
    yaml.write_text(yaml.read_text().replace('"scikit-learn>=1.6,<2"', '"scikit-learn<1.9"'))
    assert invoke_cli(["lock", "base"], root)[0] == 0
    started = time.monotonic()
    code, out, err = build(root)
    assert code == 2, out + err
    assert ("environments/base.yaml:22:18: error[BE408]: training 'demo' would run with "
            "scikit-learn 1.9.1, but serving pins 'scikit-learn<1.9'") in err
    assert "asked for by 'scikit-learn==1.9.1' (pyproject.toml:11)" in err
    assert not (root / "dist").exists() and time.monotonic() - started < 60


def test_an_invalid_requirement_is_BE350_at_its_line(tmp_path):
    root = locked_repo(tmp_path, 'requirements = [\n  "numpy",\n  "scikit-learn>>1",\n]')
    code, out, err = build(root)
    assert code == 2
    assert "pyproject.toml:13: error[BE350]: invalid requirement 'scikit-learn>>1' (training " \
           "'demo')" in err and "Traceback" not in err


def test_unresolvable_requirements_are_BE351_with_the_resolvers_reason(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("BUILDENV_TOOLCHAINS_DIR", str(store))
    root = locked_repo(tmp_path / "repo", 'requirements = ["scikit-learn", "numpy<1.20"]')
    code, out, err = build(root)
    assert code == 2, out + err
    line = next(x for x in err.splitlines() if "BE351" in x)
    assert line.startswith("pyproject.toml:11: error[BE351]: the requirements of training "
                           "'demo' cannot be resolved: ")
    assert "numpy<1.20" in line and "unsatisfiable" in line
    assert "buildenv's runner pins: pydantic==" in err
    assert not (root / "dist").exists() and not (store / "envs").exists()


@pytest.fixture
def silent_index():
    """An index that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    server.close()


def test_an_index_that_does_not_answer_is_BE352_named_with_an_offline_hint(
        tmp_path, monkeypatch, silent_index):
    monkeypatch.setenv("BUILDENV_TOOLCHAINS_DIR", str(tmp_path / "store"))
    root = locked_repo(tmp_path / "repo", toolchains=f'[tool.buildenv.toolchains]\n'
                       f'index_url = "{silent_index}"\ntimeout = 1\n')
    started = time.monotonic()
    code, out, err = build(root)
    assert code == 2, out + err
    assert f"error[BE352]: the package index did not answer while resolving training 'demo': " \
           f"{silent_index}/" in err
    assert "offline = true" in err and "timed out" in err
    assert time.monotonic() - started < 60 and not (root / "dist").exists()


def test_offline_without_the_packages_in_the_cache_is_BE352(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDENV_TOOLCHAINS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-cache"))
    root = locked_repo(tmp_path / "repo", toolchains="[tool.buildenv.toolchains]\n"
                       "offline = true\n")
    code, out, err = build(root)
    assert code == 2, out + err
    assert "error[BE352]: the requirements of training 'demo' are not all in uv's cache, and " \
           "the toolchains are offline" in err


def test_a_lock_file_is_installed_as_written(tmp_path):
    root = locked_repo(tmp_path)
    code, out, err = invoke_cli(["toolchain", "demo", "--env", "base", "--write-lock",
                                 "train/demo.lock"], root)
    assert code == 0, out + err
    assert "requires scikit-learn>=1.6,<2  (environments/base.yaml:22)" in out
    text = (root / "train/demo.lock").read_text()
    set_training(root, 'lock = "train/demo.lock"')
    code, out, err = build(root)
    assert code == 0, out + err
    assert lineage(root)["toolchain"]["source"] == "train/demo.lock"
    assert lineage(root)["toolchain"]["lock"] == toolchain_module.parse_lock(text).digest

    unhashed = "".join(f"{n}=={v}\n" for n, v in toolchain_module.parse_lock(text).packages.items())
    (root / "train/demo.lock").write_text(unhashed)
    code, out, err = build(root)
    assert code == 2 and "error[BE354]" in err and "not every entry has a --hash" in err
    (root / "train/demo.lock").write_text("six==1.17.0 --hash=sha256:" + "0" * 64 + "\n")
    code, out, err = build(root)
    assert code == 2 and "buildenv's runner needs pydantic" in err
    set_training(root, 'lock = "train/missing.lock"')
    code, out, err = build(root)
    assert code == 2 and "pyproject.toml:11: error[BE350]" in err
    set_training(root, 'lock = "a.lock"\nrequirements = []')
    code, out, err = build(root)
    assert code == 2 and "BE016" in err and "not both" in err


def test_toolchain_json_describes_the_environment(tmp_path):
    root = locked_repo(tmp_path)
    code, out, err = invoke_cli(["toolchain", "demo", "--env", "base", "--format", "json"],
                                root)
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "resolve" and data["packages"]["pyarrow"] == RUNNER["pyarrow"]
    assert data["requirements"][0] == {"requirement": "scikit-learn>=1.6,<2",
                                       "origin": "serving.requirements",
                                       "path": "environments/base.yaml", "line": 22}


# --- the store: created once, atomically, whatever happens -----------------------------------

CREATE = """\
import json, sys
from pathlib import Path
from buildenv.core.project import Project
from buildenv.toolchain.lockfile import parse_lock
from buildenv.toolchain.store import Store
from buildenv.toolchain.toolchain import base_python
from buildenv.toolchain.uv import UvSettings

store = Store(Path(sys.argv[1]))
lock = parse_lock(Path(sys.argv[2]).read_text())
env, created = store.ensure_env("k" * 64, lock, base_python(), UvSettings.of(
    Project.discover(sys.argv[3])))
print(json.dumps({"env": str(env), "created": created}))
"""


def small_lock(tmp_path: Path) -> Path:
    project = Project.discover(write_repo(tmp_path / "repo"))
    wanted = [Wanted(t, t.split("=")[0], "test") for t in ("requests==2.32.5", "six==1.17.0")]
    path = tmp_path / "small.lock"
    path.write_text(resolve_lock(project, wanted, "test").text)
    return path


def creator(store: Path, lock: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", CREATE, str(store), str(lock), str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_builds_create_one_environment_and_share_it(tmp_path):
    lock = small_lock(tmp_path)
    store = tmp_path / "store"
    procs = [creator(store, lock, tmp_path / "repo") for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["created"] for r in results) == 1
    assert len({r["env"] for r in results}) == 1
    env = Path(results[0]["env"])
    assert (env / MARKER).is_file() and (env / "requirements.lock").read_text() == \
        lock.read_text()
    assert not [p for p in (store / "tmp").iterdir()]
    check = subprocess.run([str(env / "bin/python"), "-c", "import requests, six"])
    assert check.returncode == 0


def test_a_killed_creation_leaves_no_half_built_environment(tmp_path):
    lock = small_lock(tmp_path)
    store = tmp_path / "store"
    rng = random.Random(20)
    for _ in range(5):
        proc = creator(store, lock, tmp_path / "repo")
        time.sleep(rng.uniform(0.05, 1.5))
        proc.kill()
        proc.communicate()
        env = Store(store).env_path("k" * 64)
        if env.exists():  # it finished before the kill: then it is whole
            assert (env / MARKER).is_file()
            break
    done = creator(store, lock, tmp_path / "repo")
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    env = Path(json.loads(out)["env"])
    assert (env / MARKER).is_file()
    assert not [p for p in (store / "tmp").iterdir()]  # a dead creator's temp dir is swept


def test_finding_a_ready_environment_does_not_wait_for_a_creation(tmp_path):
    """A process creating another environment holds that environment's mutex only."""
    lock = small_lock(tmp_path)
    store = Store(tmp_path / "store")
    ready = store.env_path("r" * 64)
    (ready / "bin").mkdir(parents=True)
    (ready / MARKER).write_text("{}")
    from buildenv.core.mutex import mutex, mutex_path

    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with mutex(mutex_path(store.root, "env", "k" * 64), "test", 10):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        assert store.ensure_env("r" * 64, toolchain_module.parse_lock(lock.read_text()),
                                "python3", None) == (ready, False)  # type: ignore[arg-type]
    finally:
        release.set()
        thread.join()


def test_the_lock_is_known_before_the_training_runs(tmp_path):
    """The cache key needs no environment: a build served from the cache creates none."""
    root = locked_repo(tmp_path)
    project = Project.discover(root)
    res = Multiverse(project).resolve("base")
    toolchain = training_toolchain(project, "demo", project.training("demo"), res)
    assert toolchain.lock is not None and toolchain.packages == toolchain.lock.packages
    assert toolchain.digest.startswith("sha256:")


def test_a_prepared_toolchain_builds_offline_without_running_uv(tmp_path, monkeypatch):
    """`buildenv toolchain --create` while online; offline later, the build finds the stored
    resolution and the environment: uv does not run at all."""
    monkeypatch.setenv("BUILDENV_TOOLCHAINS_DIR", str(tmp_path / "store"))
    root = locked_repo(tmp_path / "repo")
    code, out, err = invoke_cli(["toolchain", "demo", "--env", "base", "--create"], root)
    assert code == 0 and "(ready)" in out, out + err
    set_training(root, "", "[tool.buildenv.toolchains]\noffline = true\n")
    from buildenv.toolchain import store as store_module

    def no_uv(*args, **kwargs):
        raise AssertionError(f"uv ran: {args}")

    monkeypatch.setattr(toolchain_module, "run_uv", no_uv)
    monkeypatch.setattr(store_module, "run_uv", no_uv)
    code, out, err = build(root)
    assert code == 0, out + err


# --- buildenv's own install: pins agree, extras are named ------------------------------------

def test_the_runners_pins_are_buildenvs_own():
    """pins.py repeats pyproject.toml's pins: the runner gets the versions buildenv is
    tested with."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from buildenv.toolchain.pins import PRIVATE_RELEASE, STACKS

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"]
                                           .values() for r in extra)]
    pinned = {}
    for text in declared:
        req = Requirement(text)
        pinned.setdefault(canonicalize_name(req.name), set()).add(str(req.specifier))
    for name, version in {**RUNNER, **STACKS["onnx"], **PRIVATE_RELEASE}.items():
        assert pinned[canonicalize_name(name)] == {f"=={version}"}, name


def test_a_command_needing_a_missing_extra_names_it(tmp_path, monkeypatch):
    """Without the `mlflow` extra: registering is BE026 (the artifact is built), so are
    `register` and `history`; without `models`, scoring for promotion is."""
    from buildenv.core import extras

    root = locked_repo(tmp_path)
    monkeypatch.setattr(extras, "installed", lambda module: module not in {"mlflow"})
    code, out, err = build(root, "--register")
    assert code == 2 and (root / "dist/demo/base/buildenv.json").is_file(), out + err
    assert "error[BE026]: the MLflow registry at sqlite:///" in err
    assert "hint: pip install 'buildenv[mlflow]'" in err
    for args in (["history", "demo", "--env", "base"],
                 ["register", "dist/demo/base", "--training", "demo", "--env", "base"]):
        code, out, err = invoke_cli(args, root)
        assert code == 2 and "BE026" in err and "buildenv[mlflow]" in err, args
    monkeypatch.setattr(extras, "installed", lambda module: module not in {"pandas", "sklearn"})
    from buildenv.core.diagnostics import DiagnosticError
    from buildenv.release.gates import _score_on_evaluation_rows

    with pytest.raises(DiagnosticError) as caught:
        _score_on_evaluation_rows(None, None, Project.discover(root), None, "demo", "auc")
    assert "scoring models for promotion needs the model libraries" in str(caught.value)
    assert "pip install 'buildenv[models]'" in str(caught.value)


def test_installed_packages_read_from_headers_equal_the_full_metadata_parse(tmp_path):
    """Interpreter mode's lock reads each distribution's Name and Version from its header
    lines: the same as parsing the whole file (so the same toolchain digest and cache keys),
    for every distribution installed here, and the full parse when a header is folded or
    missing."""
    from importlib import metadata

    from buildenv.toolchain.toolchain import _name_version

    dists = list(metadata.distributions())
    assert len(dists) > 20
    for dist in dists:
        assert _name_version(dist) == (dist.metadata["Name"], dist.version), dist._path
    for name, text in {"folded": "Metadata-Version: 2.1\nName: folded-pkg\nVersion: 1.0\n"
                                 " .post1\n\nbody\nName: other\n",
                       "missing": "Metadata-Version: 2.1\nName: missing-pkg\n\nVersion: 9\n"
                       }.items():
        info = tmp_path / f"{name}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(text)
        dist = metadata.PathDistribution(info)
        assert _name_version(dist) == (dist.metadata["Name"], dist.version)
