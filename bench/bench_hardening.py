"""Benchmark what the hardening (issue 10) costs, each case against a baseline in the same run.

    python bench/bench_hardening.py [--repeats 5]

Runs this checkout's buildenv (`python -m buildenv` with PYTHONPATH = the repository) on a
copy of the example multiverse, one pair built once (recommender @ prod-2026-06):

1. Hostile YAML: `buildenv show bomb` (a nine-level alias bomb, refused with BE031) against
   `buildenv show prod-2026-06` (an ordinary file), and the loader alone in-process.
   Goal: refused in well under a second, at about the cost of an ordinary file.
2. Registration re-check: a no-op `buildenv build` that checks its registration marker against
   the sqlite store (one read-only query) against the same no-op with `--no-register`.
   Goal: a few milliseconds, no MLflow import.
3. Integrity before loading: hashing the artifact's files against its recorded digest, against
   loading it (`mlflow.sklearn.load_model`), in-process, best of N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, alternate, copy_repo, machine, run, table, verdict, work_dir

BOMB = "\n".join(
    ["name: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"

IN_PROCESS = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from buildenv.core.diagnostics import DiagnosticError
from buildenv.env.loader import load_yaml
root = Path(sys.argv[2])
def best(fn, n=20):
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)
def bomb():
    try:
        load_yaml(root / "environments/bomb.yaml", "bomb")
    except DiagnosticError:
        pass
ordinary = best(lambda: load_yaml(root / "environments/prod-2026-06.yaml", "p"))
refused = best(bomb)
print(f"{ordinary} {refused}")

from buildenv.compile.integrity import verify_artifact
from buildenv.compile.artifact import read_lineage
from buildenv.core.project import Project
import mlflow.sklearn
project = Project.discover(root)
art = root / "dist/recommender/prod-2026-06"
digest = read_lineage(art)["model_digest"]
verify = best(lambda: verify_artifact(project, art, digest, "a"), 10)
load = best(lambda: mlflow.sklearn.load_model(str(art)), 10)
print(f"{verify} {load}")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(machine(), flush=True)
    work = work_dir("hardening")
    copy = work / "multiverse"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BUILDENV_ROOT", None)
    env.pop("BUILDENV_TRACKING_URI", None)
    cli = [sys.executable, "-m", "buildenv"]
    if not (copy / "dist" / "recommender" / "prod-2026-06" / "buildenv.json").is_file():
        copy_repo(copy)
        run([*cli, "lock"], cwd=copy, env=env)
        started = time.perf_counter()
        run([*cli, "build", "recommender", "--env", "prod-2026-06"], cwd=copy, env=env)
        print(f"first build: {time.perf_counter() - started:.1f} s", flush=True)
    (copy / "environments" / "bomb.yaml").write_text(BOMB)

    series = alternate({
        "show bomb (refused, BE031)": lambda: run([*cli, "show", "bomb"], cwd=copy, env=env,
                                                  check=False),
        "show prod-2026-06": lambda: run([*cli, "show", "prod-2026-06"], cwd=copy, env=env),
        "build no-op, registration re-checked": lambda: run(
            [*cli, "build", "recommender", "--env", "prod-2026-06"], cwd=copy, env=env),
        "build no-op, --no-register": lambda: run(
            [*cli, "build", "recommender", "--env", "prod-2026-06", "--no-register"],
            cwd=copy, env=env),
    }, args.repeats)
    bomb, show = series["show bomb (refused, BE031)"], series["show prod-2026-06"]
    assert all(r.returncode == 2 and "BE031" in r.stderr for r in bomb.runs)
    check, skip = (series["build no-op, registration re-checked"],
                   series["build no-op, --no-register"])
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(REPO), str(copy)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    ordinary, refused, verify, load = map(float, out)

    rows = [[s.name, f"{s.median:.3f}", s.spread(), f"{s.cpu:.2f}", f"{s.rss_mb:.0f}"]
            for s in series.values()]
    print()
    print(table(["command", "wall s (median)", "range s", "CPU s", "peak RSS MiB"], rows))
    print()
    print(table(["in-process", "best s", "ratio"], [
        ["load_yaml(prod-2026-06.yaml)", f"{ordinary:.4f}", "1.00x"],
        ["load_yaml(bomb.yaml) -> BE031", f"{refused:.4f}", f"{refused / ordinary:.2f}x"],
        ["mlflow.sklearn.load_model(artifact)", f"{load:.4f}", "1.00x"],
        ["verify_artifact(artifact) (digest)", f"{verify:.4f}", f"{verify / load:.2f}x"],
    ]))
    print()
    print(f"- alias bomb refused in {bomb.median:.2f} s wall ({bomb.median / show.median:.2f}x "
          f"an ordinary `show`); goal well under 1 s: {verdict(bomb.median < 1.0)}")
    print(f"- registration re-check on a no-op build: {check.median - skip.median:+.3f} s "
          f"({check.median / skip.median:.2f}x)")
    print(f"- digest check before loading: {verify / load:.2f}x the load itself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
