"""No-op `./pants build ::` (pantsd warm) vs `dvc repro` of an equivalent dvc.yaml, same run.

Both work on fresh copies of this repository (`git archive HEAD`). The dvc.yaml is generated:
one stage per (training, environment) pair, running `buildenv build` with the same deps Pants
keys on (the training's repository modules, the environment chain, its lock, the datasets) and
the artifact directory as an uncached out. After one real build with each tool, the no-op
rebuild is timed, alternating tools (and `./pants` with Pants' Python client instead of its Rust
one, `BUILDENV_PANTS_NATIVE_CLIENT=0`). Also reported: clone-to-artifacts with
`./pants --no-pantsd build ::` on this machine's warm bootstrap/resolve caches (a truly cold
machine adds the bootstrap and the requirements PEX: ~4.8 min measured in rules/README.md).

    .venv/bin/python bench/bench_pants.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BUILDENV, REPO, WORK, ensure_peer_venv


def fresh_copy(dest: Path) -> Path:
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def dvc_yaml(root: Path) -> dict:
    from buildenv.compile.plan import pairs
    from buildenv.core.code import repo_imports
    from buildenv.core.project import Project
    from buildenv.data.lock.lockfile import lock_path
    from buildenv.env.resolve import Multiverse

    project = Project.discover(root)
    multiverse = Multiverse(project)
    stages = {}
    for training, env in pairs(project.trainings, multiverse.names()):
        config = project.training(training)
        res = multiverse.resolve(env)
        deps = [project.rel(p) for p in repo_imports(project, config.module_path)]
        deps += [project.rel(multiverse.path(name)) for name in res.chain]
        deps.append(project.rel(lock_path(project, env)))
        # Datasets stored in the repository (a catalog dataset's URI names no file: DVC cannot
        # stat it, and its lock, already a dep, pins it).
        deps += sorted({ds.uri for ds in res.env.datasets.values() if (root / ds.uri).exists()})
        stages[f"{training}--{env}"] = {
            "cmd": f"{BUILDENV} build {training} --env {env} --no-register",
            "deps": sorted(set(deps)),
            "outs": [{f"dist/{training}/{env}": {"cache": False}}],
        }
    return {"stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dvc = ensure_peer_venv(("dvc",)) / "bin" / "dvc"

    pants_repo = fresh_copy(WORK / "pants" / "pants-repo")
    clone_to_artifacts = timed(["./pants", "--no-pantsd", "build", "::"], pants_repo)
    timed(["./pants", "build", "::"], pants_repo)  # start pantsd, warm its graph

    dvc_repo = fresh_copy(WORK / "pants" / "dvc-repo")
    (dvc_repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(dvc_repo), sort_keys=True))
    timed([str(dvc), "init", "--no-scm", "-q"], dvc_repo)
    first_dvc = timed([str(dvc), "repro", "-q"], dvc_repo)

    # `./pants` runs Pants' Rust client; BUILDENV_PANTS_NATIVE_CLIENT=0 its Python client
    # (the same pantsd: the client is not part of its options).
    pants_runs, python_client_runs, dvc_runs = [], [], []
    for _ in range(args.repeats):
        pants_runs.append(timed(["./pants", "build", "::"], pants_repo))
        dvc_runs.append(timed([str(dvc), "repro", "-q"], dvc_repo))
        python_client_runs.append(timed(["./pants", "build", "::"], pants_repo,
                                        {"BUILDENV_PANTS_NATIVE_CLIENT": "0"}))
    for pid_file in (pants_repo / ".pids").rglob("pid"):  # stop this copy's pantsd
        subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)
    p, d = statistics.median(pants_runs), statistics.median(dvc_runs)
    py = statistics.median(python_client_runs)
    print(f"load average after: {os.getloadavg()}")
    print("| command | no-op wall s (median) | runs |")
    print("|---|---|---|")
    print(f"| ./pants build :: (pantsd warm) | {p:.2f} | {', '.join(f'{x:.2f}' for x in pants_runs)} |")
    print(f"| same, Python client | {py:.2f} | "
          f"{', '.join(f'{x:.2f}' for x in python_client_runs)} |")
    print(f"| dvc repro | {d:.2f} | {', '.join(f'{x:.2f}' for x in dvc_runs)} |")
    print(f"\nno-op pants / dvc = {p / d:.2f}x (goal <= 1x: {'MET' if p <= d else 'MISSED'})")
    print(f"clone-to-artifacts, ./pants --no-pantsd build :: (warm machine caches): "
          f"{clone_to_artifacts:.1f} s; first dvc repro (7 trainings): {first_dvc:.1f} s")


if __name__ == "__main__":
    main()
