"""What the training sandbox costs: set-up per build, and reads through handed-over descriptors.

    .venv/bin/python bench/bench_sandbox.py [--rows 3000000] [--repeats 7]

1. Set-up. A child that imports the runner's confinement module and exits, started the way
   `launch` starts the runner: bare (no sandbox), under bubblewrap (+ Landlock inside), under
   Landlock alone. Timed from before the machine's support is detected (as in a new build
   process: bubblewrap's verdict recalled from an earlier probe) and the `Sandbox` is
   prepared (the filesystem view, the broker, bubblewrap's command line) to the child's exit.
   Overhead = sandboxed - bare, per build. Goal: <= 50 ms. In the same rounds, the floor no
   code of buildenv's can lower: bubblewrap with the same command line running `true`, against
   a bare `true`. Detection with a fresh probe (the first build after a boot, `buildenv
   doctor`) is timed apart.
2. Reads. A child reads a seeded table through the data gate (`Gate.open(...).table`, verified
   against the lock, hashed while decoded) as a training does: unsandboxed, the gate opens the
   file itself; sandboxed, the build's broker opens it and hands the descriptor over. The read
   alone is timed inside the child (wall and CPU). Goal: sandboxed within 1.05x of unsandboxed.

Cases alternate round by round; the first round is a warm-up. On a shared, loaded machine the
ratios are what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MAIN_PY, REPO, machine, run, table, verdict, work_dir

sys.path.insert(0, str(REPO))

from buildenv.compile import isolation
from buildenv.compile.isolation import MECHANISM_VAR, detect
from buildenv.compile.sandbox import Sandbox
from buildenv.compile.sandbox_policy import SandboxPolicy
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Multiverse

SETUP_GOAL_MS = 50.0
READ_GOAL = 1.05

ENV = """\
name: bench-{fmt}
datasets:
  events:
    uri: data/events.{fmt}
    format: {fmt}
    columns:
      id: {{dtype: int64, nullable: false}}
      amount: {{dtype: float64}}
      score: {{dtype: float64}}
      country: {{dtype: string}}
      flag: {{dtype: bool}}
"""

GENERATE = """
import numpy as np, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq, sys
rows, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(7)
t = pa.table({"id": pa.array(np.arange(rows), pa.int64()),
              "amount": pa.array(rng.gamma(2.0, 30.0, rows).round(2)),
              "score": pa.array(rng.normal(0, 1, rows)),
              "country": pa.array(rng.choice(["US", "GB", "DE", "FR", "BR", "IN"], rows)),
              "flag": pa.array(rng.random(rows) < 0.3)})
pq.write_table(t, out + "/events.parquet")
pacsv.write_csv(t, out + "/events.csv")
"""

CHILD = """
import json, sys, time
from pathlib import Path
from buildenv.training.confinement import Guard
request = json.loads(Path(sys.argv[1]).read_text())
Guard.enter(request["sandbox"], Path(request["root"]))
if request["read"]:
    from buildenv.core.project import Project
    from buildenv.data.gate.gate import Gate
    from buildenv.env.spec import Environment
    env = Environment.model_validate(request["env"])
    project = Project(root=Path(request["root"]))
    start, cpu = time.perf_counter(), time.process_time()
    with Gate(project, env, "bench", pins=request["pins"]).open("events") as read:
        rows = read.table(list(env.datasets["events"].columns)).num_rows
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "cpu": time.process_time() - cpu, "rows": rows}))
"""


def launch(root: Path, fmt: str, mechanism: str, read: bool, pins: dict) -> dict:
    """Start CHILD as `launch.run_training` starts the runner; seconds from before the sandbox
    is prepared to the child's exit, and what the child measured."""
    os.environ[MECHANISM_VAR] = "none" if mechanism == "off" else mechanism
    project = Project.discover(root)
    res = Multiverse(project).resolve(f"bench-{fmt}")
    policy = SandboxPolicy("off" if mechanism == "off" else "required", False, None, (), (),
                           "the benchmark")
    work = Path(tempfile.mkdtemp(prefix="buildenv-bench-"))
    out = work / "out"
    isolation._detect.cache_clear()  # each build process detects once
    started = time.perf_counter()
    with Sandbox(project, TrainingConfig(entry="train.py:train"), res, policy, out, work, {},
                 str(MAIN_PY)) as box:
        request = {"sandbox": box.request, "root": str(root), "read": read, "pins": pins,
                   "env": res.env.model_dump(mode="json", by_alias=True)}
        (work / "request.json").write_text(json.dumps(request))
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(box.command([str(MAIN_PY), "-c", CHILD,
                                             str(work / "request.json")]),
                                cwd=root, env=box.env(env), pass_fds=box.pass_fds,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        box.started()
        stdout, stderr = proc.communicate(timeout=600)
    seconds = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mechanism} child failed:\n{stderr.decode()}")
    measured = json.loads(stdout) if read else {}
    return {"total": seconds, **measured}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    root = work_dir("sandbox")
    data = root / "data"
    data.mkdir(exist_ok=True)
    marker = root / "rows.json"
    if not marker.exists() or json.loads(marker.read_text()) != args.rows:
        print(f"generating {args.rows:,} rows", flush=True)
        run([MAIN_PY, "-c", GENERATE, str(args.rows), str(data)])
        marker.write_text(json.dumps(args.rows))
    (root / "environments").mkdir(exist_ok=True)
    for fmt in ("parquet", "csv"):
        (root / "environments" / f"bench-{fmt}.yaml").write_text(ENV.format(fmt=fmt))
    run([MAIN_PY, "-m", "buildenv", "lock", "--root", str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO)})
    pins = {fmt: json.loads((root / "environments" / f"bench-{fmt}.lock.json").read_text())
            ["datasets"]["events"]["digest"] for fmt in ("parquet", "csv")}

    os.environ[MECHANISM_VAR] = "auto"
    fresh, recalled = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        support = detect(fresh=True)
        fresh.append(time.perf_counter() - started)
        isolation._detect.cache_clear()
        started = time.perf_counter()
        support = detect()
        recalled.append(time.perf_counter() - started)
    mechanisms = ["off"] + (["auto"] if support.bwrap else []) + \
        (["landlock"] if support.landlock else [])
    print(machine(), flush=True)
    print(f"mechanism here: {support.mechanism}; detection once per build process: "
          f"{statistics.median(fresh) * 1000:.1f} ms probing, "
          f"{statistics.median(recalled) * 1000:.1f} ms with bubblewrap's verdict recalled "
          f"({'recalled' if support.recalled else 'NOT recalled'})", flush=True)

    overheads = measure_setup(root, mechanisms, args.repeats)
    ratios = measure_reads(root, data, mechanisms, args.repeats, pins)
    print()
    for mechanism, overhead in overheads.items():
        if mechanism != "off":
            print(f"- set-up {mechanism}: **{overhead:+.1f} ms** per build (goal <= "
                  f"{SETUP_GOAL_MS:.0f} ms: {verdict(overhead <= SETUP_GOAL_MS)})")
    for (fmt, mechanism), ratio in ratios.items():
        if mechanism != "off":
            print(f"- reads {fmt} {mechanism}: **{ratio:.3f}x** unsandboxed (goal <= "
                  f"{READ_GOAL}x: {verdict(ratio <= READ_GOAL)})")
    return 0


def measure_setup(root: Path, mechanisms: list[str], repeats: int) -> dict[str, float]:
    """Milliseconds each mechanism adds to starting the child, and the table of them."""
    setup: dict[str, list[float]] = {m: [] for m in mechanisms}
    floors: dict[str, list[float]] = {"true": [], "bwrap ... true": []}
    with contextlib.ExitStack() as stack:
        floor = _bwrap_true(root, stack) if "auto" in mechanisms else None
        _rounds(root, mechanisms, repeats, setup, floors, floor)
    rows = []
    overheads = {}
    # overhead: the median of each round's difference (sandboxed - bare in the same round),
    # steadier than a difference of medians while other jobs come and go
    for name, runs, base in [*((m, setup[m], setup["off"]) for m in mechanisms),
                             *((f"floor: {n}", t, floors["true"]) for n, t in floors.items()
                               if floor is not None)]:
        extra = statistics.median(r - b for r, b in zip(runs, base)) * 1000
        overheads[name] = extra
        rows.append([name, f"{statistics.median(runs) * 1000:.1f}", f"{extra:+.1f}"])
    print()
    print(table(["sandbox", "start to exit, ms", "overhead, ms"], rows))
    if floor is not None:
        print(f"\nbubblewrap's own start (the floor) {overheads['floor: bwrap ... true']:+.1f} ms; "
              f"the rest of the bubblewrap overhead, buildenv's: "
              f"{overheads['auto'] - overheads['floor: bwrap ... true']:+.1f} ms")
    return {m: overheads[m] for m in mechanisms}


def _rounds(root: Path, mechanisms: list[str], repeats: int, setup: dict[str, list[float]],
            floors: dict[str, list[float]], floor: list[str] | None) -> None:
    """Alternating rounds (the first a warm-up): each mechanism, then the floor."""
    for round_ in range(repeats + 1):
        for mechanism in mechanisms:
            seconds = launch(root, "parquet", mechanism, False, {})["total"]
            if round_:
                setup[mechanism].append(seconds)
        if floor is not None:
            for name, argv in (("true", ["true"]), ("bwrap ... true", floor)):
                started = time.perf_counter()
                subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
                if round_:
                    floors[name].append(time.perf_counter() - started)


def _bwrap_true(root: Path, stack: contextlib.ExitStack) -> list[str]:
    """bubblewrap's command line of the benchmark's sandbox, running `true`."""
    os.environ[MECHANISM_VAR] = "auto"
    project = Project.discover(root)
    res = Multiverse(project).resolve("bench-parquet")
    policy = SandboxPolicy("required", False, None, (), (), "the benchmark")
    work = Path(tempfile.mkdtemp(prefix="buildenv-bench-"))
    box = stack.enter_context(Sandbox(project, TrainingConfig(entry="train.py:train"), res,
                                      policy, work / "out", work, {}, str(MAIN_PY)))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    argv = box.command(["true"])
    at = argv.index("--json-status-fd")
    return argv[:at] + argv[at + 2:]


def measure_reads(root: Path, data: Path, mechanisms: list[str], repeats: int,
                  pins: dict[str, str]) -> dict[tuple[str, str], float]:
    """Read wall time through the gate, sandboxed / unsandboxed, per format and mechanism."""
    read_rows = []
    ratios = {}
    for fmt in ("parquet", "csv"):
        measured: dict[str, list[dict]] = {m: [] for m in mechanisms}
        for round_ in range(repeats + 1):
            for mechanism in mechanisms:
                result = launch(root, fmt, mechanism, True, {"events": pins[fmt]})
                if round_:
                    measured[mechanism].append(result)
        base = statistics.median(r["seconds"] for r in measured["off"])
        base_cpu = statistics.median(r["cpu"] for r in measured["off"])
        size = (data / f"events.{fmt}").stat().st_size / 2**20
        for mechanism in mechanisms:
            wall = statistics.median(r["seconds"] for r in measured[mechanism])
            cpu = statistics.median(r["cpu"] for r in measured[mechanism])
            ratios[(fmt, mechanism)] = wall / base
            read_rows.append([fmt, f"{size:.0f}", mechanism, f"{wall:.3f}", f"{cpu:.3f}",
                              f"{wall / base:.3f}x", f"{cpu / base_cpu:.3f}x"])
    print()
    print(table(["format", "MiB", "sandbox", "read wall s", "read CPU s", "wall vs off",
                 "CPU vs off"], read_rows))
    return ratios


if __name__ == "__main__":
    sys.exit(main())
