"""Table datasets: what locking and reading a Delta or Iceberg version costs.

    .venv/bin/python bench/bench_tables.py [--files 100] [--rows 50000] [--repeats 5]
        [--only lock|relock|read|validate] [--read-threads N ...] [--before TREE]

One seeded event stream is written three ways under bench/.work/tables/: a Delta table (one
commit per file, by delta-rs), an Iceberg table (one snapshot per file, by PyIceberg, SQLite
catalog) and a plain Parquet directory holding the Delta table's very files (hard links).
Each figure is measured in its own child process, alternating round by round, after imports
(interpreter start excluded), page cache warm; wall and CPU seconds of the work alone.

- **lock** of the whole Delta table (cold stat cache): `lock_environments`, against a bare
  sequential sha256 of the same files (what `sha256sum` does). Goal <= 1.1x.
- **relock after one append**: the stat cache of the previous lock is restored before each
  run, so the lock hashes the one new file; against hashing that file plus reading the log
  (delta-rs opening the table and listing its add actions). Goal <= 1.2x. `--before TREE`
  also relocks with the `buildenv` package under TREE (`relock@before`, alternating).
- **read** (`ctx.read`'s path: `Gate.open(...).table(columns)`, verified against the lock,
  vouched for by its stat cache) of the pinned Delta version and Iceberg snapshot, against the
  same files read as a plain Parquet directory through buildenv (goal <= 1.15x; `plain/` holds
  the Delta files, `plain-iceberg/` the Iceberg table's, which PyIceberg compresses with zstd
  where delta-rs uses snappy) and against
  the libraries' own `to_pyarrow_table()` / `scan().to_arrow()` of that version (<= 1.25x);
  `--read-threads N` also reads the Delta version and the plain directory with that many
  files decoded at once (`BUILDENV_READ_THREADS`; the default is 2);
  **validate** of each against the plain directory's (<= 1.15x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

from _common import MAIN_PY, REPO, alternate, machine, run, table, verdict, work_dir

GOALS = {"lock": 1.1, "relock": 1.2, "plain": 1.15, "library": 1.25}

COLUMNS = """\
    columns:
      id: {dtype: int64, nullable: false}
      user: {dtype: int64}
      amount: {dtype: float64, range: [0, null]}
      score: {dtype: float64}
      country: {dtype: string, domain: [US, GB, DE, FR, BR, IN, JP]}
      flag: {dtype: bool}
"""

ENVS = {
    "delta": "name: delta\ndatasets:\n  events:\n    uri: delta\n    format: delta\n"
             "    version: {version}\n" + COLUMNS,
    "iceberg": "name: iceberg\ndatasets:\n  events:\n    uri: bench.events\n"
               "    format: iceberg\n"
               "    catalog: {type: sql, uri: 'sqlite:///iceberg/catalog.db'}\n" + COLUMNS,
    "plain": "name: plain\ndatasets:\n  events:\n    uri: plain/\n" + COLUMNS,
    # the Iceberg table's own files (PyIceberg writes zstd, delta-rs snappy): its baseline
    "plain-iceberg": "name: plain-iceberg\ndatasets:\n  events:\n    uri: plain-iceberg/\n"
                     + COLUMNS,
}

GENERATE = """
import os, sys, numpy as np, pyarrow as pa
from deltalake import write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
files, rows, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def batch(i):
    rng = np.random.default_rng([7, i])
    return pa.table({
        "id": pa.array(np.arange(i * rows, (i + 1) * rows), pa.int64()),
        "user": pa.array(rng.integers(0, 500_000, rows), pa.int64()),
        "amount": pa.array(rng.gamma(2.0, 30.0, rows).round(2)),
        "score": pa.array(rng.normal(0, 1, rows)),
        "country": pa.array(rng.choice(["US", "GB", "DE", "FR", "BR", "IN", "JP"], rows)),
        "flag": pa.array(rng.random(rows) < 0.3)})
os.makedirs(root + "/iceberg", exist_ok=True)
os.chdir(root)
catalog = SqlCatalog("default", uri="sqlite:///iceberg/catalog.db", warehouse="iceberg/wh")
catalog.create_namespace("bench")
ice = catalog.create_table("bench.events", schema=batch(0).schema)
for i in range(files + 1):  # the last one is the append the relock measures
    if i < files:
        ice.append(batch(i))
    write_deltalake("delta", batch(i), mode="append")
"""

MEASURE = """
import json, os, shutil, sys, time
case, root = sys.argv[1], sys.argv[2]
if os.environ.get("BENCH_BEFORE_TREE"):  # --before: that tree's buildenv, not the editable one
    sys.path.insert(0, os.environ["BENCH_BEFORE_TREE"])
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable__" not in getattr(f, "__module__", "")]
import hashlib
import pyarrow as pa
from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.labels.locking import lock_environments
from buildenv.data.validate.validate import validate_env
from buildenv.env.resolve import Multiverse
import deltalake, pyiceberg.catalog.sql, pyiceberg.io.pyarrow  # imports are not measured
project = Project.discover(root)
multiverse = Multiverse(project)
columns = ["id", "user", "amount", "score", "country", "flag"]
def gate_read(env):
    res = multiverse.resolve(env)
    lock = read_lock(project, env)
    gate = Gate(project, res.env, "build", pins=lock.pins(), manifests=lock.manifests())
    with gate.open("events") as read:
        return read.table(columns).num_rows
start, cpu = time.perf_counter(), time.process_time()
if case == "sha256":
    base = os.path.join(root, "delta")
    rows = 0
    for folder, _, names in os.walk(base):
        for name in sorted(names):
            if name.endswith(".parquet"):
                h = hashlib.sha256()
                with open(os.path.join(folder, name), "rb", buffering=0) as f:
                    while chunk := f.read(8 << 20):
                        h.update(chunk)
                rows += 1
elif case in ("lock", "relock"):
    results, problems = lock_environments(multiverse, ["delta"])
    assert not problems, problems
    rows = results[0][1].datasets["events"].rows
elif case == "append-baseline":  # hash the appended file, read the log (the latest version)
    path = sys.argv[3]
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    table = deltalake.DeltaTable(os.path.join(root, "delta"))
    rows = pa.table(table.get_add_actions(flatten=True)).num_rows
elif case.startswith("read-"):
    rows = gate_read(case[5:])
elif case.startswith("validate-"):
    env = case[9:]
    res = multiverse.resolve(env)
    lock = read_lock(project, env)
    problems = validate_env(res, project, lock.pins(), manifests=lock.manifests())
    assert not [p for p in problems if p.is_error], problems
    rows = lock.datasets["events"].rows
elif case == "lib-delta":
    version = int(sys.argv[3])
    rows = deltalake.DeltaTable(os.path.join(root, "delta"), version=version) \\
        .to_pyarrow_table(columns=columns).num_rows
elif case == "lib-iceberg":
    os.chdir(root)
    catalog = pyiceberg.catalog.sql.SqlCatalog("default", uri="sqlite:///iceberg/catalog.db")
    snapshot = read_lock(project, "iceberg").datasets["events"].table["snapshot"]
    rows = catalog.load_table("bench.events").scan(snapshot_id=snapshot,
                                                   selected_fields=tuple(columns)) \\
        .to_arrow().num_rows
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "rows": rows}), flush=True)
os._exit(0)  # delta-rs' runtime can abort while the interpreter tears down; the figure is out
"""

BEFORE_LOCK = """
import os, runpy, sys
sys.path.insert(0, os.environ["BENCH_BEFORE_TREE"])
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.argv = ["buildenv", "lock", "--root", sys.argv[1]]
runpy.run_module("buildenv", run_name="__main__")
"""


def _setup(root, files: int, rows: int) -> str:
    """The three tables (written once, reused by later runs); returns the Delta table's last
    file, the append a relock hashes."""
    marker = root / "made.json"
    wanted = {"files": files, "rows": rows}
    if not (marker.exists() and json.loads(marker.read_text()) == wanted):
        for name in ("delta", "iceberg", "plain", "plain-iceberg", "environments", ".buildenv"):
            shutil.rmtree(root / name, ignore_errors=True)
        print(f"writing {files} files of {rows:,} rows as Delta, Iceberg and plain Parquet",
              flush=True)
        run([MAIN_PY, "-c", GENERATE, str(files), str(rows), str(root)])
        # files older than the stat cache's racy window, as data usually is
        past = os.path.getmtime(root / "delta") - 3600
        for path in root.rglob("*.parquet"):
            os.utime(path, (past, past))
        marker.write_text(json.dumps(wanted))
    import pyarrow as pa
    from deltalake import DeltaTable

    def paths(version: int) -> set[str]:
        return set(pa.table(DeltaTable(str(root / "delta"), version=version)
                            .get_add_actions(flatten=True)).column("path").to_pylist())

    before, after = paths(files - 1), paths(files)
    plain = root / "plain"
    if not plain.exists():
        plain.mkdir()
        for name in sorted(before):  # the very files of the version the reads pin
            os.link(root / "delta" / name, plain / name)
    [appended] = sorted(after - before)
    iceberg_plain = root / "plain-iceberg"
    if not iceberg_plain.exists():
        iceberg_plain.mkdir()
        for path in sorted((root / "iceberg").rglob("*.parquet")):
            os.link(path, iceberg_plain / path.name)
    return str(root / "delta" / appended)


def _checks(args: argparse.Namespace) -> list[tuple[str, str, str, float]]:
    """(what, case, baseline case, goal) of every ratio the run may print."""
    checks = [("lock / sha256 of the files", "lock", "sha256", GOALS["lock"]),
              ("relock after one append / hash it + read the log", "relock",
               "append-baseline", GOALS["relock"]),
              ("read Delta version / plain directory", "read-delta", "read-plain",
               GOALS["plain"]),
              ("read Iceberg snapshot / plain directory of its files", "read-iceberg",
               "read-plain-iceberg", GOALS["plain"]),
              ("read Delta version / deltalake to_pyarrow_table", "read-delta", "lib-delta",
               GOALS["library"]),
              ("read Iceberg snapshot / pyiceberg scan().to_arrow()", "read-iceberg",
               "lib-iceberg", GOALS["library"]),
              ("validate Delta version / plain directory", "validate-delta", "validate-plain",
               GOALS["plain"]),
              ("validate Iceberg snapshot / plain directory of its files",
               "validate-iceberg", "validate-plain-iceberg", GOALS["plain"])]
    if args.before:
        checks.append(("relock after one append, the --before tree / hash it + read the log",
                       "relock@before", "append-baseline", GOALS["relock"]))
    for n in args.read_threads:  # the same goals with another worker count
        checks += [(f"read Delta version / plain directory, {n} read thread(s)",
                    f"read-delta@{n}", f"read-plain@{n}", GOALS["plain"]),
                   (f"read Delta version / deltalake to_pyarrow_table, {n} read thread(s)",
                    f"read-delta@{n}", "lib-delta", GOALS["library"])]
    return checks


def _verdicts(checks: list[tuple[str, str, str, float]], measured: dict[str, list[dict]],
              med) -> list[str]:
    """A line per ratio of the cases measured (sections left out with --only are skipped)."""
    out = []
    for what, mine, base, goal in checks:
        if mine not in measured or base not in measured:
            continue
        wall, cpu = med(mine) / med(base), med(mine, "cpu") / med(base, "cpu")
        out.append(f"- {what}: **{wall:.2f}x** wall, {cpu:.2f}x CPU (goal <= {goal}x: "
                   f"{verdict(wall <= goal)} on wall time, {verdict(cpu <= goal)} on CPU)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=50_000, help="rows per file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", action="append", choices=["lock", "relock", "read", "validate"],
                        help="measure only these sections (repeatable; default: all)")
    parser.add_argument("--before", metavar="TREE",
                        help="also relock with the buildenv package under TREE (e.g. a `git "
                             "archive` of an older commit), alternating with this one")
    parser.add_argument("--read-threads", type=int, action="append", default=[],
                        help="also read the Delta version and the plain directory with this "
                             "BUILDENV_READ_THREADS (repeatable; the default is always read)")
    args = parser.parse_args()
    only = set(args.only or ["lock", "relock", "read", "validate"])
    root = work_dir("tables")
    (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
    appended = _setup(root, args.files, args.rows)
    version = args.files - 1  # 100 files; version `files` appends one more
    (root / "environments").mkdir(exist_ok=True)
    for name, text in ENVS.items():
        (root / "environments" / f"{name}.yaml").write_text(text.replace('{version}', str(version)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    state = root / ".buildenv"
    measured: dict[str, list[dict]] = {}

    def case(name: str, *argv: str, threads: int | None = None, tree: str | None = None):
        def go():
            child = env if threads is None else {**env, "BUILDENV_READ_THREADS": str(threads)}
            if tree is not None:
                child = {**child, "BENCH_BEFORE_TREE": tree}
            result = run([MAIN_PY, "-c", MEASURE, name.split("@")[0], str(root), *argv],
                         env=child)
            measured.setdefault(name, []).append(json.loads(result.stdout))
            return result
        return go

    def cold() -> None:  # a first lock: no stat cache, no lock, nothing kept
        shutil.rmtree(state, ignore_errors=True)
        (root / "environments" / "delta.lock.json").unlink(missing_ok=True)

    print(machine(), flush=True)
    if "lock" in only:
        alternate({"sha256": case("sha256"), "lock": case("lock")}, args.repeats,
                  before={"lock": cold})
    # the lock of every environment, and its stat cache, for the reads and the relock (and
    # the stat cache as the --before tree writes it: its form may differ)
    saved_before = root / "statcache.saved-before"
    if args.before:
        run([MAIN_PY, "-c", BEFORE_LOCK, str(root)], env={**env, "BENCH_BEFORE_TREE": args.before})
        shutil.copy(state / "statcache.json", saved_before)
    run([MAIN_PY, "-m", "buildenv", "lock", "--root", str(root)], env=env)
    saved = root / "statcache.saved"
    shutil.copy(state / "statcache.json", saved)
    lock_saved = (root / "environments" / "delta.lock.json").read_text()
    (root / "environments" / "delta.yaml").write_text(ENVS["delta"].replace('{version}', str(version + 1)))

    def warm() -> None:  # the state right after locking version N
        shutil.copy(saved, state / "statcache.json")
        (root / "environments" / "delta.lock.json").write_text(lock_saved)

    def warm_before() -> None:  # the same, as the --before tree left it
        warm()
        shutil.copy(saved_before, state / "statcache.json")

    if "relock" in only:
        before_tree = ({"relock@before": case("relock@before", tree=args.before)}
                       if args.before else {})
        alternate({"append-baseline": case("append-baseline", appended),
                   "relock": case("relock"), **before_tree}, args.repeats,
                  before={"relock": warm, "relock@before": warm_before})
    warm()
    (root / "environments" / "delta.yaml").write_text(ENVS["delta"].replace('{version}', str(version)))
    if "read" in only:
        alternate({"read-plain": case("read-plain"), "read-delta": case("read-delta"),
                   "read-plain-iceberg": case("read-plain-iceberg"),
                   "read-iceberg": case("read-iceberg"),
                   "lib-delta": case("lib-delta", str(version)),
                   "lib-iceberg": case("lib-iceberg"),
                   **{f"{name}@{n}": case(f"{name}@{n}", threads=n) for n in args.read_threads
                      for name in ("read-plain", "read-delta")}}, args.repeats)
    nocache = {name: (lambda: shutil.rmtree(state / "cache", ignore_errors=True))
               for name in ("validate-plain", "validate-delta", "validate-plain-iceberg",
                            "validate-iceberg")}
    if "validate" in only:
        alternate({name: case(name) for name in nocache}, args.repeats, before=nocache)

    def med(name: str, key: str = "seconds") -> float:
        return statistics.median(m[key] for m in measured[name][1:])  # [0]: warm-up

    size = sum(p.stat().st_size for p in (root / "plain").glob("*.parquet")) / 2**20
    rows = [[name, f"{med(name):.3f}", f"{med(name, 'cpu'):.3f}"] for name in measured]
    print()
    print(f"{args.files} files, {args.files * args.rows:,} rows, {size:.0f} MiB (Delta files)")
    print(table(["case", "wall s", "CPU s"], rows))
    for line in _verdicts(_checks(args), measured, med):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
