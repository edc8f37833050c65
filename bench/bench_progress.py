"""Benchmark what progress reporting costs the hot paths: lock, validate and drift.

    .venv/bin/python bench/bench_progress.py [--lock-mb 1024] [--rows 5000000] [--repeats 5]
                                             [--baseline-src DIR] [--only lock|validate|drift]

The data and environments of bench_lock.py, bench_validate.py and bench_drift.py (their
generators, seeds and work directories: data they already generated is reused). Each command
runs as the CLI in a child process, alternating round by round, once per mode:

- `off`: BUILDENV_PROGRESS=off, no renderer; the hooks still run (a task per file or dataset,
  one addition per 8 MiB chunk or record batch);
- `plain`: the status-line renderer (a thread waking four times a second);
- `live`: the rich live view, forced onto the non-terminal stderr and redrawn four times a
  second (what a terminal gets);
- `no hooks` (with --baseline-src DIR): the same command on a source tree without any
  progress code (e.g. `git archive <commit before> buildenv | tar -x -C DIR`).

Wall time and CPU time (user + system, from os.wait4) per mode, medians; ratios are
`mode / off`. On a shared, loaded machine these end-to-end numbers move by a few percent
either way from run to run, more than the effect being measured, so they carry no verdict. A
second section measures the parts in-process, in CPU time, in the same run: what one hook
call costs next to the work it sits in (hashing an 8 MiB chunk, reading one 262,144-row batch
of the validate data), and what one renderer tick costs (at four ticks a second, its share of
one core). Goal: hooks and ticks together under 1% of the work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_drift
import bench_lock
import bench_validate
from _common import BUILDENV, Run, alternate, machine, run, table, verdict, work_dir

MICRO_GOAL = 0.01  # hooks + ticks, as a share of the work they report on

MICRO = r"""
import hashlib, io, json, sys, time
from buildenv.core import progress
from buildenv.cli import progress_view
from buildenv.cli.progress_view import Lines, Live

def best(fn, repeats=7):  # CPU seconds: what it costs, whatever else the machine runs
    out = []
    for _ in range(repeats):
        t = time.process_time(); fn(); out.append(time.process_time() - t)
    return min(out)

N = 1_000_000
item = progress.task("x", total=N, unit="bytes")
empty = best(lambda: [None for _ in range(N)])
hooked = best(lambda: [item.advance(1) for _ in range(N)])
advance_ns = max(0.0, hooked - empty) / N * 1e9

chunk = bytes(8 << 20)
hash_chunk_s = best(lambda: hashlib.sha256(chunk).digest())

class B:
    num_rows = 262_144
batches = [B()] * 10_000
plain_s = best(lambda: [None for _ in batches])
wrapped_s = best(lambda: [None for _ in progress.batches(batches, "rows")])
batch_ns = max(0.0, wrapped_s - plain_s) / len(batches) * 1e9

import pyarrow.parquet as pq
pf = pq.ParquetFile(sys.argv[1])
def read_all():
    for _ in pf.iter_batches(batch_size=262_144):
        pass
batch_read_s = best(read_all, 3) / max(1, -(-pf.metadata.num_rows // 262_144))

def ticks(renderer, n=200):
    with progress.installed(renderer):
        tasks = [progress.task(f"hash data/file-{i}.parquet", total=1 << 30, unit="bytes")
                 for i in range(8)] + [progress.task(f"train-{i} @ prod", keep=True)
                                       for i in range(4)]
        for t in tasks:
            t.advance(1 << 29)
        now = time.monotonic() + 40
        renderer.tick(now)  # first frame (and rich's import) not counted
        t0 = time.process_time()
        for i in range(n):
            renderer.tick(now + i * 0.25)
        spent = (time.process_time() - t0) / n
        for t in tasks:
            t.done()
    return spent

lines_tick_s = ticks(Lines(io.StringIO(), ticking=False))
live_tick_s = ticks(Live(io.StringIO(), force_terminal=True, ticking=False))
print(json.dumps({"advance_ns": advance_ns, "hash_chunk_s": hash_chunk_s, "batch_ns": batch_ns,
                  "batch_read_s": batch_read_s, "lines_tick_s": lines_tick_s,
                  "live_tick_s": live_tick_s}))
"""


def mode_env(mode: str, source: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BUILDENV_PROGRESS_AFTER", None)
    env.pop("BUILDENV_PROGRESS_HEARTBEAT", None)
    env["BUILDENV_PROGRESS"] = mode
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def lock_repo(mb: int) -> tuple[Path, str, Path]:
    root = work_dir("lock") / "repo"
    name = f"big-{mb}m"
    files = bench_lock.setup_repo(root, {name: mb})
    return root, name, files[name]


def validate_repo(rows: int) -> Path:
    root = work_dir("validate") / "repo"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    data = root / "data" / "bench.parquet"
    stamp = data.with_suffix(".seed")
    want = f"{bench_validate.SEED}:{rows}:{json.dumps(bench_validate.COLUMNS, sort_keys=True)}"
    if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
        print(f"generating {data} ({rows} rows)", flush=True)
        bench_validate.make_data(data, rows, bench_validate.SEED)
        stamp.write_text(want)
    (root / "environments" / "bench.yaml").write_text(
        bench_validate.env_yaml("bench", "data/bench.parquet"))
    return root


def drift_repo(rows: int) -> Path:
    root = work_dir("drift") / "repo"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.buildenv]\n")
    for version in ("a", "b"):
        data = root / "data" / f"{version}.parquet"
        stamp = data.with_suffix(".seed")
        want = f"{bench_drift.SEED}:{rows}:{version}:{json.dumps(bench_drift.COLUMNS)}"
        if not data.is_file() or not stamp.is_file() or stamp.read_text() != want:
            print(f"generating {data} ({rows} rows)", flush=True)
            bench_drift.make_data(data, rows, bench_drift.SEED, version == "b")
            stamp.write_text(want)
    (root / "environments" / "bench.yaml").write_text(
        bench_drift.env_yaml("bench", "data/a.parquet"))
    (root / "environments" / "bench-b.yaml").write_text(
        bench_drift.env_yaml("bench-b", "data/b.parquet"))
    run([BUILDENV, "lock", "bench", "bench-b"], cwd=root, env=mode_env("off"))
    return root


def compare(title: str, argv: list[str], root: Path, repeats: int, baseline: Path | None,
            before=None, ok_codes: tuple[int, ...] = (0,)) -> str:
    modes = ["off", "plain", "live"]
    cases = {}
    for mode in modes:
        def case(mode: str = mode) -> Run:
            r = run([BUILDENV, *argv], cwd=root, env=mode_env(mode), check=False)
            if r.returncode not in ok_codes:
                raise RuntimeError(f"{argv} exited {r.returncode}: {r.stderr[-2000:]}")
            return r
        cases[mode] = case
    if baseline is not None:
        def plain_case() -> Run:
            r = run([BUILDENV, *argv], cwd=root, env=mode_env("off", baseline), check=False)
            if r.returncode not in ok_codes:
                raise RuntimeError(f"{argv} (no hooks) exited {r.returncode}: {r.stderr[-2000:]}")
            return r
        cases["no hooks"] = plain_case
    print(f"\n{title}: buildenv {' '.join(argv)}", flush=True)
    series = alternate(cases, repeats, before={name: before for name in cases} if before else None)
    off = series["off"]
    rows = []
    for name, s in series.items():
        wall, cpu = s.median / off.median, s.cpu / off.cpu
        rows.append([name, f"{s.median:.2f}", f"{wall:.3f}x", f"{s.cpu:.2f}", f"{cpu:.3f}x",
                     f"{s.rss_mb:.0f}"])
    lines = series["live"].runs[-1].stderr.count("\n")
    text = table(["mode", "wall s", "wall vs off", "CPU s", "CPU vs off", "peak RSS MiB"], rows)
    return (f"### {title}\n\n`buildenv {' '.join(argv)}`\n\n{text}\n\n"
            f"(live mode wrote {len(series['live'].runs[-1].stderr):,} bytes of redraws to "
            f"stderr in its last run, {lines} newlines)")


def micro(parquet: Path) -> tuple[str, bool]:
    from _common import MAIN_PY

    r = run([MAIN_PY, "-c", MICRO, parquet])
    m = json.loads(r.stdout.strip().splitlines()[-1])
    per_chunk = m["advance_ns"] * 1e-9 / m["hash_chunk_s"]
    per_batch = m["batch_ns"] * 1e-9 / m["batch_read_s"]
    plain_share, live_share = m["lines_tick_s"] * 4, m["live_tick_s"] * 4
    rows = [
        ["`bar.advance(n)`, once per 8 MiB chunk", f"{m['advance_ns']:.0f} ns",
         f"sha256 of 8 MiB: {m['hash_chunk_s'] * 1e3:.1f} ms", f"{per_chunk:.2e}"],
        ["`progress.batches`, once per record batch", f"{m['batch_ns']:.0f} ns",
         f"reading one 262,144-row batch: {m['batch_read_s'] * 1e3:.1f} ms",
         f"{per_batch:.2e}"],
        ["plain lines: one tick, 12 tasks", f"{m['lines_tick_s'] * 1e6:.0f} us",
         "4 ticks per second of work", f"{plain_share:.2e}"],
        ["live view: one tick (render + redraw), 12 rows", f"{m['live_tick_s'] * 1e3:.2f} ms",
         "4 ticks per second of work", f"{live_share:.2e}"],
    ]
    worst = max(per_chunk, per_batch) + max(plain_share, live_share)
    text = table(["what", "costs", "next to", "share"], rows)
    return (f"### The parts, in-process\n\n{text}\n\nworst case, hooks and ticks together: "
            f"{worst:.2%} of the work (goal < {MICRO_GOAL:.0%})"), worst < MICRO_GOAL


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lock-mb", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-src", type=Path, help="a source tree without progress code")
    ap.add_argument("--only", choices=["lock", "validate", "drift", "micro"], action="append")
    args = ap.parse_args()
    only = args.only or ["lock", "validate", "drift", "micro"]
    baseline = args.baseline_src.resolve() if args.baseline_src else None
    if baseline is not None and (baseline / "buildenv" / "core" / "progress.py").exists():
        ap.error("--baseline-src must be a tree without buildenv/core/progress.py")
    print(f"# bench_progress ({machine()})", flush=True)
    sections, goals = [], {}
    if "lock" in only:
        root, name, data = lock_repo(args.lock_mb)
        cache = root / ".buildenv" / "statcache.json"
        sections.append(compare(f"lock, {data.stat().st_size / 2**20:.0f} MiB Parquet, cold",
                                ["lock", name], root, args.repeats, baseline,
                                before=lambda: cache.unlink(missing_ok=True)))
    if "validate" in only:
        root = validate_repo(args.rows)
        sections.append(compare(f"validate, {args.rows:,} rows", ["validate", "bench"], root,
                                args.repeats, baseline, ok_codes=(0, 1)))
    if "drift" in only:
        root = drift_repo(args.rows)
        cache = root / ".buildenv" / "cache" / "drift"
        sections.append(compare(f"drift, 2 x {args.rows:,} rows",
                                ["drift", "bench", "--dataset", "events", "--against",
                                 "data/b.parquet"], root, args.repeats, baseline,
                                before=lambda: shutil.rmtree(cache, ignore_errors=True),
                                ok_codes=(0, 1)))
    if "micro" in only:
        text, ok = micro(validate_repo(args.rows) / "data" / "bench.parquet")
        sections.append(text)
        goals["hooks + ticks < 1% of the work"] = ok
    print("\n\n".join(sections))
    print("\n## Goals\n" + "\n".join(f"- {k}: {verdict(v)}" for k, v in goals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
