"""Benchmark toolchains: a training's own locked environment (issue 20).

    .venv/bin/python bench/bench_toolchains.py [--repeats 2] [--only new-env|lookup|install]

(a) new-env. The first build of a training whose requirement set has no environment yet,
    against the bare resolver on the same requirements in the same round: `uv pip compile
    --generate-hashes` + `uv venv` + `uv pip sync` (what buildenv runs, by hand). Each round
    adds a requirement at a version no earlier round used (so: a new resolution, a new
    environment, nothing of it compiled yet) in one store, after a warm-up round (a store's
    first environment also compiles the standard library's bytecode into its `pycache/`).
    uv's cache is shared and warm: downloads are not what is measured. The build is the
    recommender on prod-2026-12 (`--no-register --no-cache`, a copy of the example
    multiverse), timed twice: first, and again (environment found). Goal: first - again <=
    resolver + 10 s.
(b) lookup. In-process: finding a training's ready environment (its stored resolution read,
    its lock parsed and hashed, the environment's directory stat'ed), median of 200 calls,
    against the bare minimum (read the lock file, sha256 it, stat a path). Goal: <= 50 ms.
(c) install. `pip install` of buildenv's base (this tree, no extras) into a fresh venv, against
    the dependency set buildenv installed before toolchains (`BEFORE`, all pinned), each in a
    fresh venv, pip's cache warm; size of the venv (du) and wall time. Goal: base <= 40% of
    the size before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BUILDENV, MAIN_PY, REPO, copy_repo, machine, run, table, verdict, work_dir

# `pip install buildenv` before toolchains: its [project] dependencies as they were pinned.
BEFORE = ["pydantic==2.14.4", "PyYAML==6.0.4", "jsonschema==4.26.0", "typer==0.29.2",
          "rich==15.0.0", "numpy==2.4.6", "pandas==3.1.1", "pyarrow==25.0.1",
          "scikit-learn==1.9.1", "mlflow==3.17.2", "fsspec==2026.9.0", "s3fs==2026.9.0",
          "blake3==1.0.11", "skl2onnx==1.20.0", "onnx==1.23.2", "onnxruntime==1.32.0",
          "packaging==26.4", "docker==7.2.0"]
TRAINING, ENV = "recommender", "prod-2026-12"


def uv() -> str:
    return str(MAIN_PY.parent / "uv")


def bare_resolver(requirements: list[str], scratch: Path) -> float:
    """compile + venv + sync by hand, as buildenv runs them; seconds."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / "req.in").write_text("".join(f"{r}\n" for r in requirements))
    base = getattr(sys, "_base_executable", sys.executable)
    started = time.perf_counter()
    for cmd in (["pip", "compile", "--no-config", "-q", "--generate-hashes", "--no-header",
                 "--no-annotate", "--python", base, "-o", "lock.txt", "req.in"],
                ["venv", "--no-config", "-q", "--relocatable", "--python", base, "env"],
                ["pip", "sync", "--no-config", "-q", "--require-hashes", "--python",
                 "env/bin/python", "lock.txt"]):
        run([uv(), *cmd], cwd=scratch)
    return time.perf_counter() - started


# A new requirement set per round: the example's serving pin and one small pure-Python
# distribution at a version no earlier round used (its own lock, so its own environment).
VARIANTS = ["six==1.17.0", "six==1.16.0", "six==1.15.0", "six==1.14.0", "six==1.13.0"]


def _requirements_of(repo: Path, variant: str, env: dict) -> list[str]:
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text().split("\n# bench:")[0]
    pyproject.write_text(text + f"\n# bench:\n[tool.buildenv.trainings.{TRAINING}-bench]\n"
                         f'entry = "examples/movies/train.py:train"\nenvironments = ["{ENV}"]\n'
                         f'requirements = ["scikit-learn>=1.8,<2", "{variant}"]\n')
    info = json.loads(run([BUILDENV, "toolchain", f"{TRAINING}-bench", "--env", ENV,
                           "--format", "json"], cwd=repo, env=env).stdout)
    return [r["requirement"] for r in info["requirements"]]


def new_env(repeats: int) -> list[str]:
    """First build with a new requirement set, in a store that served other sets before."""
    repo = copy_repo(work_dir("toolchains") / "repo")
    run([BUILDENV, "lock", ENV], cwd=repo)
    store = work_dir("toolchains") / "store"
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "BUILDENV_TOOLCHAINS_DIR": str(store)}
    out = work_dir("toolchains") / "out"
    args = [BUILDENV, "build", f"{TRAINING}-bench", "--env", ENV, "--no-register",
            "--no-cache", "--out", str(out)]
    rows, verdicts = [], []
    for i, variant in enumerate(VARIANTS[:repeats + 1]):
        requirements = _requirements_of(repo, variant, env)
        resolver = bare_resolver(requirements, work_dir("toolchains") / "bare")
        shutil.rmtree(out, ignore_errors=True)
        first = run(args, cwd=repo, env=env).seconds
        shutil.rmtree(out, ignore_errors=True)
        again = run(args, cwd=repo, env=env).seconds
        if i == 0:  # the store's first environment also compiles the standard library's
            print(f"  warm-up ({variant}): first build {first:.2f}s, again {again:.2f}s",
                  flush=True)
            continue
        overhead = first - again
        rows.append([variant, f"{resolver:.2f}", f"{first:.2f}", f"{again:.2f}",
                     f"{overhead:.2f}", f"{overhead - resolver:+.2f}"])
        verdicts.append(overhead <= resolver + 10)
        print(f"  round {i}: resolver {resolver:.2f}s, first build {first:.2f}s, again "
              f"{again:.2f}s", flush=True)
    shutil.rmtree(store, ignore_errors=True)
    return [table(["new requirement", "bare resolver s", "first build s", "build again s",
                   "first - again s", "beyond the resolver s"], rows),
            f"- first build of a new requirement set <= resolver + 10 s: "
            f"**{verdict(all(verdicts))}** ({sum(verdicts)}/{len(verdicts)} rounds)"]


LOOKUP = """
import hashlib, os, statistics, sys, time
from pathlib import Path
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.toolchain.toolchain import environment_path, training_toolchain

project = Project.discover(sys.argv[1])
res = Multiverse(project).resolve(sys.argv[3])
config = project.training(sys.argv[2])

def find():
    toolchain = training_toolchain(project, sys.argv[2], config, res)
    return environment_path(project, toolchain).is_dir()

lock = next((project.toolchains_dir / "envs").glob("*/*/requirements.lock"))

def bare():
    data = lock.read_bytes()
    hashlib.sha256(data).hexdigest()
    return lock.parent.is_dir()

assert find()
out = {}
for name, fn in (("find", find), ("bare", bare)):
    times = []
    for _ in range(200):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    out[name] = statistics.median(times) * 1e3
print(out["find"], out["bare"])
"""


def lookup() -> list[str]:
    repo = copy_repo(work_dir("toolchains") / "repo")
    run([BUILDENV, "lock", ENV], cwd=repo)
    run([BUILDENV, "toolchain", TRAINING, "--env", ENV, "--create"], cwd=repo)
    out = run([MAIN_PY, "-c", LOOKUP, str(repo), TRAINING, ENV], cwd=repo).stdout.split()
    found, bare = float(out[0]), float(out[1])
    return [table(["lookup", "median ms"], [["find the training's environment (buildenv)",
                                            f"{found:.2f}"],
                                           ["read + sha256 the lock, stat (bare)",
                                            f"{bare:.3f}"]]),
            f"- later builds find their environment in {found:.2f} ms (<= 50 ms: "
            f"**{verdict(found <= 50)}**), {found / bare:.0f}x the bare minimum"]


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def install() -> list[str]:
    work = work_dir("toolchains") / "install"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "buildenv"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, source / name)
    rows, sizes = [], {}
    empty = work / "empty"
    subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
    for name, what in (("base", [str(source)]), ("before", BEFORE)):
        venv = work / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        started = time.perf_counter()
        run([venv / "bin/pip", "install", "-q", *what])
        seconds = time.perf_counter() - started
        sizes[name] = _du(venv)
        packages = len(json.loads(run([venv / "bin/pip", "list", "--format", "json"]).stdout))
        rows.append([name, f"{sizes[name] / 1e6:.0f}", f"{seconds:.1f}", packages])
    added = {k: v - _du(empty) for k, v in sizes.items()}
    ratio = sizes["base"] / sizes["before"]
    return [table(["install", "venv MB", "pip install s", "distributions"], rows),
            f"- base / before: **{ratio:.0%}** of the venv ({added['base'] / added['before']:.0%} "
            f"of what the install adds to an empty venv); goal <= 40%: "
            f"**{verdict(ratio <= 0.40)}**"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=["new-env", "lookup", "install"])
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    lines: list[str] = []
    if args.only in (None, "new-env"):
        lines += ["### First build of a new requirement set", *new_env(args.repeats)]
    if args.only in (None, "lookup"):
        lines += ["### Finding the environment again", *lookup()]
    if args.only in (None, "install"):
        lines += ["### Base install", *install()]
    print("\n\n".join(lines))


if __name__ == "__main__":
    main()
