"""The transforms' process started from the last build's recipe (`compile.start_recipe`): a
build keeps the recipe in the user's cache (private, never data); the next `buildenv lock`
starts from it before pydantic, adopts it only when the sandbox it computes is the one it was
started with (same bytes either way), restarts an edited one, ignores one that is not the
user's or does not parse, and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, invoke_cli
from partitioned_repo import age, write_file
from sourcerepo import source_fixtures
from test_early_runner import _files, _gone, _runners

from buildenv.compile import early_runner, start_recipe

_progress, template, locked = source_fixtures("recipe")

# `buildenv lock` as users run it, reporting what became of the process started early, its
# pid, whether it came from the recipe, and each launch from the recipe (whether the quick
# lock's modules were imported by then)
DRIVER = """\
import atexit, json, sys
from buildenv.compile import early_runner, start_recipe
seen, path = {"from_recipe": None, "launches": []}, sys.argv[1]
def report():
    with open(path, "w") as f:
        json.dump({"outcomes": early_runner.outcomes, **seen}, f)
atexit.register(report)
orig = start_recipe.begin
def begin(*a):
    answered = orig(*a)
    seen["from_recipe"] = start_recipe.pending[-1].proc.pid if start_recipe.pending else None
    return answered
start_recipe.begin = begin
launch = start_recipe.launch
def launched(entry):  # whether the quick lock's modules were imported yet
    seen["launches"].append("buildenv.cli.quick_lock" in sys.modules)
    return launch(entry)
start_recipe.launch = launched
sys.argv = ["buildenv", "lock", "ev"]
from buildenv.cli import run
run()
"""


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield
    early_runner.discard()
    early_runner.outcomes.clear()


def _lock(root: Path, tmp_path: Path, env: dict[str, str] | None = None
          ) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("BUILDENV_ROOT", "BUILDENV_NO_PREFETCH")}
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(report)], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=300)
    assert report.is_file(), (proc.returncode, proc.stdout, proc.stderr[-3000:])
    return proc, json.loads(report.read_text())


def _built_once(root: Path, seed: int, tmp_path: Path) -> None:
    """A lock that starts a transform (so keeps a recipe), then one more changed input."""
    write_file(root, 1, 1, seed=seed)
    age(root)
    proc, _ = _lock(root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    write_file(root, 1, 1, seed=seed + 1)
    age(root)


def test_a_build_keeps_a_private_recipe_outside_the_repository_without_data(locked, tmp_path):
    _built_once(locked, 5100, tmp_path)
    path = start_recipe.recipe_path(locked)
    assert path.is_file() and not path.is_relative_to(locked)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    entry = json.loads(text)["entries"][0]
    assert entry["environment"] == "ev" and "<work>" in text
    # no digest the lock pins (of data, derived or not) is in it
    lock = (locked / "environments/ev.lock.json").read_text()
    digests = set(re.findall(r"[0-9a-f]{64}", lock))
    assert digests and not any(d in text for d in digests)
    assert not list(locked.rglob("*recipe*"))


def test_the_next_lock_starts_from_the_recipe_and_gives_the_same_bytes(template, tmp_path):
    early = Path(shutil.copytree(template, tmp_path / "early", symlinks=True))
    late = Path(shutil.copytree(template, tmp_path / "late", symlinks=True))
    for root in (early, late):
        _built_once(root, 5200, tmp_path)
    proc, seen = _lock(early, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["from_recipe"] is not None and seen["outcomes"] == ["adopted"], proc.stderr
    proc, seen = _lock(late, tmp_path, {"BUILDENV_NO_PREFETCH": "1"})
    assert proc.returncode == 0, proc.stderr
    assert seen["outcomes"] == [] and seen["from_recipe"] is None
    assert _files(early) == _files(late)
    assert not _runners(early) and not _runners(late)


@pytest.mark.parametrize("edit", ["environment variable", "work directory"])
def test_an_edited_recipe_is_killed_and_the_build_starts_its_own(locked, tmp_path, edit):
    _built_once(locked, 5300, tmp_path)
    path = start_recipe.recipe_path(locked)
    recipe = json.loads(path.read_text())
    if edit == "environment variable":
        recipe["entries"][0]["env"]["LANG"] = "xx_XX.planted"
    else:  # its work directory elsewhere than the repository's scratch
        recipe["entries"][0]["state_dir"] = str(tmp_path / "xx_XX.planted")
    path.write_text(json.dumps(recipe))
    proc, seen = _lock(locked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["from_recipe"] is not None and seen["outcomes"] == ["restarted"], proc.stderr
    assert _gone(seen["from_recipe"]) and not _runners(locked)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0
    # the build saved the recipe it computed again
    assert "xx_XX.planted" not in path.read_text()


def test_a_recipe_others_could_write_or_own_is_ignored(locked, tmp_path, monkeypatch):
    _built_once(locked, 5400, tmp_path)
    path = start_recipe.recipe_path(locked)
    assert start_recipe.load(locked) is not None
    path.chmod(0o666)
    assert start_recipe.load(locked) is None
    path.chmod(0o600)
    path.parent.chmod(0o777)
    assert start_recipe.load(locked) is None
    path.parent.chmod(0o700)
    path.chmod(0o644 | stat.S_IWOTH)
    proc, seen = _lock(locked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["from_recipe"] is None and not _runners(locked)
    path.chmod(0o600)
    uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: uid + 1)  # another user's file
    assert start_recipe.load(locked) is None


def test_a_symlinked_recipe_is_ignored(locked, tmp_path):
    _built_once(locked, 5500, tmp_path)
    path = start_recipe.recipe_path(locked)
    target = path.with_name("elsewhere.json")
    path.rename(target)
    path.symlink_to(target)
    assert start_recipe.load(locked) is None


@pytest.mark.parametrize("content", ["{not json", '{"entries": 5}',
                                     '{"entries": [{"environment": "ev", "command": 5}]}'])
def test_a_corrupt_recipe_is_ignored_without_a_traceback(locked, tmp_path, content):
    _built_once(locked, 5600, tmp_path)
    path = start_recipe.recipe_path(locked)
    path.write_text(content)
    proc, seen = _lock(locked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert seen["from_recipe"] is None and not _runners(locked)
    assert invoke_cli(["lock", "ev", "--check"], locked)[0] == 0


@pytest.mark.parametrize("policy", ["default", "off"])
def test_no_cloud_credential_reaches_a_recipe(locked, tmp_path, policy):
    """The runner's environment may carry the caller's cloud credentials (without a sandbox it
    is the caller's): a planted secret is in no file of the user's cache, sandboxed or not, and
    an unsandboxed runner leaves no recipe at all."""
    secret = "SENTINEL-aws-secret-5713"
    if policy == "off":
        pyproject = locked / "pyproject.toml"
        text = pyproject.read_text()
        assert "[tool.buildenv]" in text
        pyproject.write_text(text.replace("[tool.buildenv]", '[tool.buildenv]\nsandbox = "off"', 1))
    write_file(locked, 1, 1, seed=5300)
    age(locked)
    proc, _ = _lock(locked, tmp_path, {"AWS_SECRET_ACCESS_KEY": secret,
                                       "GOOGLE_APPLICATION_CREDENTIALS": secret})
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "cache"
    for path in (p for p in cache.rglob("*") if p.is_file()) if cache.exists() else ():
        assert secret not in path.read_text(errors="replace"), path
    if policy == "off":
        assert not start_recipe.recipe_path(locked).exists()


def test_the_recipe_decides_before_any_yaml_is_read(tmp_path, monkeypatch):
    """A recipe that answers starts (or skips) the process without the YAML (whose import
    would delay it); without one, the YAML decides as before."""
    from buildenv.cli import early

    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    read: list[list[str]] = []
    monkeypatch.setattr(early, "_datasets", lambda d, names, keys: read.append(names) or [])
    monkeypatch.setattr(start_recipe, "begin", lambda root, names: True)
    early._start_runner(["ev", "--root", str(tmp_path)])
    assert read == []
    monkeypatch.setattr(start_recipe, "begin", lambda root, names: False)
    early._start_runner(["ev", "--root", str(tmp_path)])
    assert read == [["ev"]]


def test_the_recipe_starts_the_process_before_the_quick_lock_imports(locked, tmp_path):
    """A stale transform's process starts in the command's first milliseconds, before the
    quick lock's imports; the lock after it (nothing stale) starts none."""
    _built_once(locked, 5500, tmp_path)
    proc, seen = _lock(locked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["launches"] == [False] and seen["outcomes"] == ["adopted"], proc.stderr
    proc, seen = _lock(locked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["launches"] == [] and seen["outcomes"] == [], proc.stderr
    assert not _runners(locked)


def test_a_lock_without_a_recipe_or_nothing_stale_imports_no_starter(tmp_path, monkeypatch):
    """The check before the quick lock costs stats: no recipe, or one that guesses nothing
    stale, imports neither the process starter nor json's parser needlessly."""
    from buildenv.cli import early
    from buildenv.compile import recipe_file

    (tmp_path / "pyproject.toml").write_text("[tool.buildenv]\n")
    code = ("import sys; from buildenv.cli import early; "
            f"early.start_from_recipe(['buildenv', 'lock', '--root', {str(tmp_path)!r}]); "
            "print('buildenv.compile.start_recipe' in sys.modules, 'json' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BUILDENV_NO_PREFETCH", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    # a recipe whose entry is not stale: no start
    lock, output = tmp_path / "ev.lock.json", tmp_path / "out.parquet"
    output.write_text("x")
    lock.write_text("{}")
    recipe = {"entries": [{"environment": "ev", "output": str(output), "lock": str(lock),
                           "stat_cache": str(tmp_path / "none"), "watch": [str(output)]}]}
    path = recipe_file.recipe_path(tmp_path)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_text(json.dumps(recipe))
    path.chmod(0o600)
    started: list[object] = []
    monkeypatch.setattr(start_recipe, "launch", lambda entry: started.append(entry))
    os.utime(lock, ns=(output.stat().st_ctime_ns + 10**9,) * 2)
    early.start_from_recipe(["buildenv", "lock", "ev", "--root", str(tmp_path)])
    assert started == [] and not start_recipe.pending
    os.utime(lock, ns=(output.stat().st_ctime_ns - 10**9,) * 2)  # the output changed since
    early.start_from_recipe(["buildenv", "lock", "ev", "--root", str(tmp_path)])
    assert len(started) == 1


def test_the_cache_keeps_the_recipes_written_last_not_one_per_repository_ever(tmp_path,
                                                                               monkeypatch):
    """Every repository built leaves a recipe (a test's or CI's temporary clone too): a save
    keeps the `KEEP` written last and removes older ones and what a killed save left, never a
    file it did not write."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "buildenv" / "start-recipes"
    folder.mkdir(mode=0o700, parents=True)
    for i in range(start_recipe.KEEP + 10):  # older repositories' recipes, oldest first
        old = folder / f"{i:032x}.json"
        old.write_text('{"entries": []}')
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    half = folder / ".recipe-killed"
    half.write_text("{")
    os.utime(half, (1_000_000, 1_000_000))
    fresh_half = folder / ".recipe-writing"  # a save running now
    fresh_half.write_text("{")
    other = folder / "notes.txt"
    other.write_text("mine")
    os.utime(other, (1_000_000, 1_000_000))
    repo = tmp_path / "repo"
    repo.mkdir()
    start_recipe.save(repo, {"environment": "ev", "dataset": "d"})
    left = sorted(p.name for p in folder.iterdir())
    recipes = [n for n in left if n.endswith(".json")]
    assert len(recipes) == start_recipe.KEEP
    assert start_recipe.recipe_path(repo).name in recipes  # the one just written
    assert f"{0:032x}.json" not in recipes and f"{start_recipe.KEEP + 9:032x}.json" in recipes
    assert ".recipe-killed" not in left and ".recipe-writing" in left and "notes.txt" in left
    assert start_recipe.load(repo) == {"entries": [{"environment": "ev", "dataset": "d"}]}
