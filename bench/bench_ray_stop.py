"""Benchmark what the Ray tasks' stop flag costs a build that is not interrupted, and why it
replaced `ray.cancel`.

    .venv/bin/python bench/bench_ray_stop.py [--repeats 5] [--reads 2000]
                                             [--tree NAME=PATH ...]
    .venv/bin/python bench/bench_ray_stop.py --race cancel|flag [--rounds 300] [--seed 1]

(a) A normal `buildenv build --all --executor ray --no-cache` (a local Ray of 2 CPUs, 4 pairs
    whose training sleeps 3 s after its fit, so each task looks at its stop flag about 6 times),
    timed per `--tree` (a checkout of buildenv, put first on PYTHONPATH: e.g. the commit before
    the stop flag and this one), alternating. Wall and CPU (the build and the Ray processes it
    started and reaped).
(b) What one look costs: `--reads` reads of an unset stop flag from a Ray task on the same
    local Ray, CPU and wall per read (a task with a 3 s training reads it 6 times).
(c) `--race`: rounds of two 50 ms tasks stopped at about the time they end (the stop's moment
    drawn from `--seed`), by `ray.cancel(force=False)` (`cancel`, what an interrupted build
    did before) or by the stop flag (`flag`). Prints the round reached: with `cancel`, Ray
    2.60's driver dies within a few hundred rounds more often than not ("Tried to complete
    task that was not pending", exit 1); run it once per seed, as a child process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import REPO, alternate, machine, run, table

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.lr]
entry = "train/slow_lr.py:train"
environments = ["base", "next"]
threads = 1

[tool.buildenv.trainings.lr7]
entry = "train/slow_lr.py:train"
environments = ["base", "next"]
seed = 7
threads = 1
"""

def make_repo(root: Path) -> Path:
    from buildrepo import TRAININGS, make_build_repo

    make_build_repo(root)
    (root / "environments" / "private.yaml").unlink()
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    slow = "import time\n" + TRAININGS["lr.py"].replace(
        "    return model", "    time.sleep(3.0)  # the task looks at its stop flag meanwhile\n"
        "    return model")
    (root / "train" / "slow_lr.py").write_text(slow)
    return root


def bench_build(work: Path, trees: dict[str, Path], repeats: int) -> str:
    root = make_repo(work / "repo")
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("RAY_ADDRESS", "BUILDENV_RAY_ADDRESS", "BUILDENV_ROOT")}
    base_env.update(BUILDENV_RAY_NUM_CPUS="2", BUILDENV_RAY_OBJECT_STORE_MB="100")
    run([sys.executable, "-m", "buildenv", "lock"], cwd=root,
        env={**base_env, "PYTHONPATH": str(next(iter(trees.values())))})

    def case(tree: Path):
        env = {**base_env, "PYTHONPATH": str(tree)}
        return lambda: run([sys.executable, "-m", "buildenv", "build", "--all", "--executor",
                            "ray", "--no-register", "--no-cache", "--jobs", "2",
                            "--no-progress"], cwd=root, env=env)

    def fresh() -> None:  # every timed build trains its 4 pairs (dist/ would make them cached)
        shutil.rmtree(root / "dist", ignore_errors=True)
        shutil.rmtree(root / ".buildenv" / "cache", ignore_errors=True)

    series = alternate({name: case(tree) for name, tree in trees.items()}, repeats,
                       before={name: fresh for name in trees})
    assert all("4 built" in r.stdout for s in series.values() for r in s.runs)
    rows = [[name, f"{s.median:.2f}", s.spread(), f"{s.cpu:.2f}"] for name, s in series.items()]
    return table(["tree", "wall median (s)", "wall range", "CPU median (s)"], rows)


def bench_reads(reads: int) -> str:
    import ray

    from buildenv.data.executor import StopFlag

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 << 20)
    try:
        @ray.remote
        def look(flag: StopFlag, n: int) -> tuple[float, float, bool]:
            import time

            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                flag.is_set()
            return time.perf_counter() - wall, time.process_time() - cpu, flag.is_set()

        wall, cpu, seen = ray.get(look.remote(StopFlag("bench"), reads))
    finally:
        ray.shutdown()
    assert not seen
    return table(["reads", "wall per read (us)", "CPU per read (us)"],
                 [[reads, f"{wall / reads * 1e6:.0f}", f"{cpu / reads * 1e6:.0f}"]])


def race(mode: str, rounds: int, seed: int) -> int:
    import random

    import ray

    from buildenv.data.executor import StopFlag

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 << 20)

    @ray.remote(max_retries=0)
    def work(seconds: float, flag: StopFlag | None) -> str:
        import time

        if flag is None:  # ray.cancel interrupts the sleep (KeyboardInterrupt)
            time.sleep(seconds)
            return "done"
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if flag is not None and flag.is_set():
                return "stopped"
            time.sleep(0.005)
        return "done"

    rng = random.Random(seed)
    ends = {"done": 0, "stopped": 0}
    for i in range(rounds):
        print("round", i, flush=True)
        flag = StopFlag(f"race-{seed}-{i}") if mode == "flag" else None
        refs = [work.remote(0.05, flag) for _ in range(2)]
        ray.wait(refs, num_returns=2, timeout=0.0)
        time.sleep(0.05 + rng.uniform(-0.02, 0.04))
        for ref in refs:
            if flag is None:
                ray.cancel(ref, force=False)
        if flag is not None:
            flag.set()
        for ref in refs:
            try:
                ends[ray.get(ref)] += 1
            except ray.exceptions.TaskCancelledError:
                ends["stopped"] += 1
        if flag is not None:
            flag.clear()
    print(f"{mode}: {rounds} rounds, tasks {ends}", flush=True)
    ray.shutdown()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--tree", action="append", default=[],
                    help="NAME=PATH of a buildenv checkout (default: this one)")
    ap.add_argument("--race", choices=["cancel", "flag"])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.race:
        return race(args.race, args.rounds, args.seed)
    trees = {t.split("=", 1)[0]: Path(t.split("=", 1)[1]).resolve() for t in args.tree} or {
        "this": REPO}
    print(machine(), f"load {os.getloadavg()[0]:.2f}", time.strftime("%Y-%m-%d %H:%M UTC",
                                                                    time.gmtime()))
    with tempfile.TemporaryDirectory(prefix="bench-ray-stop-") as tmp:
        print(bench_build(Path(tmp), trees, args.repeats))
    print(f"load {os.getloadavg()[0]:.2f}")
    print(bench_reads(args.reads))
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
