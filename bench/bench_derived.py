"""Data and labels made by code: the issue's ratios, each against its bare baseline in the same
run (docs/derived.md, docs/labels.md).

1. derived rebuild: a derived dataset over N input files. Baselines are what a user would run by
   hand instead of buildenv: a fresh `python` process that imports pandas and pyarrow, reads
   the input file(s), runs the same transform and writes its output as Parquet. "That file
   alone" is that script on the one changed file; "a bare loop" is that script looping over
   every file. A fresh process is part of both because the user's alternative is a script run
   from the shell (a transform cannot run without one); the in-process cost of the transform
   alone (no start-up) is printed too. buildenv is `buildenv lock` from the command line: its
   own start-up, the environment, hashing what changed, the static checks, the hermetic
   process that runs the transform, storing and pinning the output. Each figure is wall time
   and CPU time (user + system of the processes started, less sensitive to a loaded machine);
   each is the median of `--repeat` runs, buildenv and baseline alternating.
2. labeling functions: the label model on ROWS x 10 votes (`generative`, `majority`) in
   seconds; applying 10 vectorised functions to pandas batches through buildenv's vote path
   (`training.label_run._call`: the declared columns, checks, class codes) vs calling them and
   converting their results to Arrow in a bare loop.
3. `tasks`: assigning EXAMPLES examples to 20 annotators (`labels.tasks.assign`), 1% of the
   pairs already seen.
4. `loop`: the derived dataset's per-file cost without start-up: the transform runner's loop
   (`training.derive_run.run_transform_job`, the request `buildenv lock` sends it, every
   output written) vs the bare script's loop (read, transform, write), both in this process,
   alternating; CPU seconds (the runner's hashing thread included), the median of 3 x REPEAT.

5. `reapply` (on request): a label set of 10 labeling functions over FILES partitions (ROWS
   in all), locked from the command line; then one partition is added, `lock --check` must name
   it, and `buildenv lock` is timed against that partition run by hand (a fresh `python`:
   read it, call the functions, write their votes as Parquet -- the derived one-file
   definition), and the full lock's time / FILES. Then the label set and the lock after the
   re-lock are compared (sha256) with those of a lock from scratch (`.buildenv/labels/`
   removed), and their digests printed, to compare across trees.
6. `tasks-cli` (on request): `buildenv tasks` for EXAMPLES examples, 20 annotators, overlap 3,
   as a command in a fresh process.

    .venv/bin/python bench/bench_derived.py [--files 100] [--file-rows 20000] [--repeat 3]
        [--rows 10000000] [--examples 1000000]
        [--only derived|functions|model|tasks|loop|reapply|tasks-cli] [--sandbox off]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from buildenv.labels.label_model import generative, majority  # noqa: E402
from buildenv.labels.tasks import assign  # noqa: E402

ENV = """\
name: b
datasets:
  events:
    uri: data/events/
    partitions: [day]
    columns:
      day: {dtype: int64}
      kind: {dtype: string}
      x: {dtype: float64}
  daily:
    source: {transform: t.py:daily, inputs: [events]}
    columns:
      day: {dtype: int64}
      kind: {dtype: string}
      n: {dtype: int64}
      mean_x: {dtype: float64}
"""

TRANSFORM = '''\
def daily(ctx):
    df = ctx.read("events", columns=["kind", "x"])
    return df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
'''


def _transform(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))


def _file(root: Path, day: int, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = root / "data" / "events" / f"day={day}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"kind": rng.choice(["a", "b", "c"], rows),
                             "x": rng.normal(size=rows)}), path)
    return path


BARE = """\
import sys
import pyarrow as pa
import pyarrow.parquet as pq
import pandas as pd


def daily(df):
    return df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))


for i, path in enumerate(sys.argv[2:]):
    out = daily(pq.read_table(path, columns=["kind", "x"]).to_pandas())
    pq.write_table(pa.Table.from_pandas(out, preserve_index=False), f"{sys.argv[1]}/{i}.parquet")
"""


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one command and what it started."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    after = os.times()
    return wall, (after.children_user - before.children_user
                  + after.children_system - before.children_system)


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def derived(files: int, rows: int, repeat: int, sandbox: str | None = None) -> None:
    # byte-compiled modules are kept, as an installed buildenv has them
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    lock = [sys.executable, "-m", "buildenv", "lock", "b"]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        # the start recipe the first lock keeps (as a user's would) goes with the repository
        env["XDG_CACHE_HOME"] = cache

        def repository(root: Path, spec: str) -> list[Path]:
            (root / "environments").mkdir(parents=True)
            mode = f'sandbox = "{sandbox}"\n' if sandbox else ""
            (root / "pyproject.toml").write_text(
                '[tool.buildenv]\nenvironments_dir = "environments"\n' + mode)
            (root / "environments" / "b.yaml").write_text(spec)
            (root / "t.py").write_text(TRANSFORM)
            (root / "bare.py").write_text(BARE)
            (root / "out").mkdir()
            paths = [_file(root, d, rows, d) for d in range(files)]
            for p in paths:
                os.utime(p, (past, past))
            _timed(lock, root, env)  # warm: byte-compiled modules, the OS's file cache
            return paths

        past = time.time() - 120
        root, single = Path(tmp) / "default", Path(tmp) / "single"
        paths = repository(root, ENV)
        # the same dataset built by one process (`source.processes: 1`): the sequential path
        repository(single, ENV.replace("inputs: [events]}", "inputs: [events], processes: 1}"))
        bare = [sys.executable, "bare.py", "out"]
        full, seq, loop, one, alone = [], [], [], [], []
        for r in range(repeat):
            shutil.rmtree(root / ".buildenv", ignore_errors=True)
            full.append(_timed(lock, root, env))
            loop.append(_timed(bare + [str(p.relative_to(root)) for p in paths], root, env))
            shutil.rmtree(single / ".buildenv", ignore_errors=True)
            seq.append(_timed(lock, single, env))
            _file(root, 3, rows, 1000 + r)
            os.utime(paths[3], (past, past))
            one.append(_timed(lock, root, env))
            alone.append(_timed(bare + [str(paths[3].relative_to(root))], root, env))
        started = time.perf_counter()
        for p in paths:
            _transform(pq.read_table(p, columns=["kind", "x"]).to_pandas())
        in_process = time.perf_counter() - started
    (fw, fc), (sw, sc), (lw, lc), (ow, oc), (aw, ac) = map(_median,
                                                           (full, seq, loop, one, alone))
    print(f"derived, {files} files x {rows:,} rows, median of {repeat}:\n"
          f"  full build: buildenv {fw:.2f} s wall / {fc:.2f} s cpu vs bare loop {lw:.2f} s / "
          f"{lc:.2f} s: {fw / lw:.2f}x wall, {fc / lc:.2f}x cpu (the transform in-process, no "
          f"start-up, no writes: {in_process:.2f} s)\n"
          f"  full build, `processes: 1`: buildenv {sw:.2f} s wall / {sc:.2f} s cpu: "
          f"{sw / lw:.2f}x wall, {sc / lc:.2f}x cpu\n"
          f"  one file changed: buildenv {ow:.2f} s wall / {oc:.2f} s cpu vs that file alone "
          f"{aw:.2f} s / {ac:.2f} s: {ow / aw:.2f}x wall, {oc / ac:.2f}x cpu")


FUNCTIONS = [
    lambda b, t=t: np.where(b["x"].to_numpy() > t, "pos", None) for t in np.linspace(-2, 2, 5)
] + [
    lambda b, t=t: np.where(b["x"].to_numpy() < t, "neg", None) for t in np.linspace(-2, 2, 5)
]


def functions(rows: int, batch: int = 1_000_000) -> None:
    import buildenv
    from buildenv.training.label_run import _call

    declared = [buildenv.labeling_function(columns=["x"])(fn) for fn in FUNCTIONS]
    job = {"module": "bench", "taxonomy_version": "1"}
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"x": rng.normal(size=min(batch, rows - s))})
              for s in range(0, rows, batch)]
    classes = pa.array(["neg", "pos"])
    started = time.perf_counter()
    for frame in frames:
        for fn in FUNCTIONS:
            pa.array(fn(frame), type=pa.string(), from_pandas=True)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    for frame in frames:
        for j, fn in enumerate(declared):
            _call(fn, f"f{j}", frame, classes, job, "", False, ROOT, ROOT, {"x": None})
    ours = time.perf_counter() - started
    print(f"10 functions on {rows:,} rows: buildenv vote path {ours:.2f} s vs bare loop "
          f"{bare:.2f} s ({ours / bare:.2f}x)")


def label_model(rows: int) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, rows)
    matrix = np.full((rows, 10), -1, np.int8)
    for j in range(10):
        right = rng.random(rows) < 0.6 + 0.03 * j
        matrix[:, j] = np.where(rng.random(rows) < 0.5, np.where(right, truth, 1 - truth), -1)
    started = time.perf_counter()
    majority(matrix, 2)
    maj = time.perf_counter() - started
    started = time.perf_counter()
    labels, model = generative(matrix, ["a", "b"], [f"f{j}" for j in range(10)])
    gen = time.perf_counter() - started
    print(f"label model on {rows:,} x 10: majority {maj:.2f} s, generative {gen:.2f} s "
          f"({model.iterations} EM iterations), accuracy {(labels == truth).mean():.3f}")


def tasks(examples: int) -> None:
    keys = pa.array(np.arange(examples).astype(str))
    people = [f"a{i}" for i in range(20)]
    rng = np.random.default_rng(2)
    n_seen = examples // 100
    seen = pa.table({"key": keys.take(pa.array(rng.integers(0, examples, n_seen))),
                     "annotator": pa.array(rng.choice(people, n_seen))})
    started = time.perf_counter()
    result = assign(keys, people, 3, seen, seed=1)
    took = time.perf_counter() - started
    print(f"tasks: {examples:,} examples, 20 annotators, overlap 3: {took:.2f} s "
          f"({len(result.uncovered)} uncovered)")


def loop(files: int, rows: int, repeat: int) -> None:
    # deferred on purpose: only this part runs buildenv's lock and runner in this process
    from typer.testing import CliRunner

    from buildenv.cli import app
    from buildenv.compile import source_process
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment
    from buildenv.training.derive_run import run_transform_job
    from buildenv.training.runner import _manifests

    requests: list[dict] = []
    real = source_process.SourceProcess.run

    def capture(self, res, jobs, pins, manifests, *args, **kwargs):
        requests.append({"jobs": jobs, "env": res.env.model_dump(mode="json", by_alias=True),
                         "pins": dict(pins),
                         "manifests": {n: m.to_json() for n, m in manifests.items()}})
        return real(self, res, jobs, pins, manifests, *args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "environments").mkdir()
        (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = '
                                             '"environments"\nsandbox = "off"\n')
        (root / "environments" / "b.yaml").write_text(ENV)
        (root / "t.py").write_text(TRANSFORM)
        paths = [_file(root, d, rows, d) for d in range(files)]
        past = time.time() - 120
        for p in paths:
            os.utime(p, (past, past))
        source_process.SourceProcess.run = capture
        cwd = os.getcwd()
        os.chdir(root)
        try:
            result = CliRunner().invoke(app, ["lock", "b"], env={"BUILDENV_ROOT": None},
                                        catch_exceptions=False)
        finally:
            os.chdir(cwd)
            source_process.SourceProcess.run = real
        assert result.exit_code == 0 and requests, result.output
        request = requests[0]
        job = request["jobs"][0]
        out = root / "out"
        for i, item in enumerate(job["files"]):
            item["out"] = str(out / f"{i}.parquet")
        env = Environment.model_validate(request["env"])
        project = Project(root=root, data_root=root)
        manifests = _manifests(request)
        own = ROOT / "buildenv"
        sys.path.insert(0, str(root))

        def runner() -> None:
            problems = run_transform_job(job, env, project, request["pins"], manifests, root,
                                         own, {})
            assert not problems, problems

        def bare() -> None:
            for i, p in enumerate(paths):
                done = _transform(pq.read_table(p, columns=["kind", "x"]).to_pandas())
                pq.write_table(pa.Table.from_pandas(done, preserve_index=False),
                               out / f"{i}.parquet")

        def cpu(run) -> float:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()  # new files each time, as in a build (replacing one costs a flush)
            started = time.process_time()
            run()
            return time.process_time() - started

        cpu(runner), cpu(bare)  # warm: the transform's module, pandas' first calls
        ours, theirs = [], []
        for _ in range(3 * repeat):
            ours.append(cpu(runner))
            theirs.append(cpu(bare))
    o, b = statistics.median(ours), statistics.median(theirs)
    print(f"derived per-file loop, {files} files x {rows:,} rows, in-process, median of "
          f"{3 * repeat}: runner {o:.3f} s cpu vs bare loop {b:.3f} s cpu: {o / b:.2f}x "
          f"({(o - b) / files * 1000:+.2f} ms a file)")


LF_ENV = """\
name: b
datasets:
  events:
    uri: data/events/
    partitions: [day]
    columns:
      day: {dtype: int64}
      user: {dtype: int64, nullable: false}
      x: {dtype: float64}
      kind: {dtype: string}
labels:
  rules:
    dataset: events
    key: user
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    source:
      functions: rules.py
"""

LF_FUNCTION = '''

@buildenv.labeling_function(columns=["x"])
def {name}_{i}(batch):
    return np.where(batch["x"].to_numpy() {op} {t}, "{vote}", None)
'''

LF_MODULE = "import numpy as np\n\nimport buildenv\n" + "".join(
    LF_FUNCTION.format(name=name, i=i, op=op, t=f"{t:g}", vote=vote)
    for i, t in enumerate(np.linspace(-2, 2, 5))
    for name, op, vote in (("above", ">", "pos"), ("below", "<", "neg")))

# the same functions run by hand on some partitions: read, call them, write their votes
LF_BARE = LF_MODULE.replace(
    "import buildenv\n", "import sys\n\nimport pyarrow as pa\nimport pyarrow.parquet as pq\n"
).replace('@buildenv.labeling_function(columns=["x"])\n', "") + """

FUNCTIONS = [v for k, v in list(globals().items()) if k.startswith(("above_", "below_"))]
for i, path in enumerate(sys.argv[2:]):
    batch = pq.read_table(path, columns=["x"]).to_pandas()
    votes = {f.__name__: pa.array(f(batch), type=pa.string(), from_pandas=True)
             for f in FUNCTIONS}
    pq.write_table(pa.table(votes), f"{sys.argv[1]}/{i}.parquet")
"""


def _events(root: Path, day: int, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = root / "data" / "events" / f"day={day}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = day * rows
    pq.write_table(pa.table({"user": np.arange(start, start + rows, dtype=np.int64),
                             "x": rng.normal(size=rows),
                             "kind": rng.choice(["a", "b", "c"], rows)}), path)
    return path


def _cli_env(cache: str) -> dict[str, str]:
    # byte-compiled modules are kept, as an installed buildenv has them
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_CACHE_HOME"] = cache
    return env


APPLYING = re.compile(r"apply labeling functions \(([\d,]+) function-file pairs\): done in "
                      r"[^\n]*\(applying ([\d.]+) s\)")


def _applying(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Wall and CPU seconds of one `buildenv lock`, and the seconds its transforms' process
    spent applying labeling functions (its progress line's "applying"; 0 when none ran)."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = os.times()
    found = APPLYING.search(done.stderr)
    return (wall, after.children_user - before.children_user + after.children_system
            - before.children_system, float(found.group(2)) if found else 0.0)


def reapply(files: int, rows: int, repeat: int, sandbox: str | None = None) -> None:
    """Issue #22: re-apply after adding 1 of 100 partitions <= 1.2x that partition's share.

    Two readings, both printed. (1) The application itself -- the goal's own frame, beside
    "applying 10 functions to 10M rows": the seconds the re-lock's process spends applying the
    functions (reading, calling, writing votes; its progress line's "applying") against the
    full lock's applying / files. It shows that only the new partition is applied. (2) The
    whole command against what a user would run by hand: a fresh `python` that reads the one
    new partition with pyarrow, converts it to pandas, calls the 10 functions and writes their
    votes as Parquet -- the definition the derived one-file goal uses. The re-lock also
    recomputes the label set over every row (the label model and its file), which (2)
    includes."""
    per = rows // files
    lock = [sys.executable, "-m", "buildenv", "lock", "b"]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        env = _cli_env(cache)
        env["BUILDENV_PROGRESS_AFTER"] = "0"  # every step's line, however short
        root = Path(tmp)
        (root / "environments").mkdir()
        mode = f'sandbox = "{sandbox}"\n' if sandbox else ""
        (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n'
                                             + mode)
        (root / "environments" / "b.yaml").write_text(LF_ENV)
        (root / "rules.py").write_text(LF_MODULE)
        (root / "bare.py").write_text(LF_BARE)
        (root / "out").mkdir()
        paths = [_events(root, d, per, d) for d in range(files)]
        past = time.time() - 120
        for p in paths:
            os.utime(p, (past, past))
        bare = [sys.executable, "bare.py", "out"]
        _timed(lock, root, env)  # warm: byte-compiled modules, the OS's file cache
        full, added, alone, checked = [], [], [], []
        applied_all: list[float] = []
        applied_one: list[float] = []
        for r in range(repeat):
            shutil.rmtree(root / "data" / "events" / f"day={files}", ignore_errors=True)
            shutil.rmtree(root / ".buildenv", ignore_errors=True)
            wall, cpu, spent = _applying(lock, root, env)
            full.append((wall, cpu))
            applied_all.append(spent)
            new = _events(root, files, per, 1000 + r)
            os.utime(new, (past, past))
            check = subprocess.run(lock + ["--check"], cwd=root, capture_output=True, text=True,
                                   env=env)
            checked.append(check.returncode != 0 and f"day={files}" in check.stderr)
            if not checked[-1]:
                print(f"  lock --check did not name the added file: {check.stderr[-2000:]}")
            wall, cpu, spent = _applying(lock, root, env)
            added.append((wall, cpu))
            applied_one.append(spent)
            alone.append(_timed(bare + [str(new.relative_to(root))], root, env))
        # the incremental result against a lock from scratch (no cached votes or blocks)
        incremental = _label_digests(root)
        shutil.rmtree(root / ".buildenv" / "labels")
        _timed(lock, root, env)
        scratch = _label_digests(root)
    (fw, fc), (aw, ac), (ow, oc) = map(_median, (full, added, alone))
    pa_all, pa_one = statistics.median(applied_all), statistics.median(applied_one)
    ratio = f"{pa_one / (pa_all / files):.2f}x" if pa_all else "no applying reported"
    print(f"reapply, {files} partitions x {per:,} rows + 1, 10 labeling functions, median of "
          f"{repeat} (lock --check named the added file: {all(checked)}):\n"
          f"  full lock: {fw:.2f} s wall / {fc:.2f} s cpu; one partition's share "
          f"{fw / files:.3f} s / {fc / files:.3f} s\n"
          f"  partition added: buildenv {aw:.2f} s wall / {ac:.2f} s cpu vs that partition by "
          f"hand {ow:.2f} s / {oc:.2f} s: {aw / ow:.2f}x wall, {ac / oc:.2f}x cpu "
          f"(vs the full lock's share: {aw / (fw / files):.1f}x wall)\n"
          f"  applying the functions: the full lock {pa_all:.2f} s, a partition's share "
          f"{pa_all / files:.4f} s; the re-lock {pa_one:.4f} s: {ratio}\n"
          f"  label set and lock after the re-lock the same as from scratch: "
          f"{incremental == scratch} (label set {incremental[0][:19]}, lock {incremental[1][:19]})")


def _label_digests(root: Path) -> tuple[str, str]:
    """sha256 of the reapply repository's label set file and of its lock file."""
    return (sha256_file(root / ".buildenv" / "labels" / "b" / "rules.parquet"),
            sha256_file(root / "environments" / "b.lock.json"))


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


TASKS_ENV = """\
name: b
datasets:
  items:
    uri: data/items.parquet
    columns:
      id: {dtype: int64, nullable: false}
      x: {dtype: float64}
      kind: {dtype: string}
labels:
  votes:
    uri: data/votes.parquet
    format: parquet
    dataset: items
    key: id
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    ui_version: "1"
"""


def tasks_cli(examples: int, repeat: int) -> None:
    """Issue #22: `buildenv tasks` for EXAMPLES examples and 20 annotators <= 10 s, as a
    command (a fresh process); 1% of the examples are annotated already."""
    people = [f"a{i}" for i in range(20)]
    rng = np.random.default_rng(3)
    command = [sys.executable, "-m", "buildenv", "tasks", "b", "--labels", "votes",
               "--annotators", ",".join(people), "--overlap", "3", "--select", "unlabeled",
               "--seed", "1", "--out"]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        env = _cli_env(cache)
        root = Path(tmp)
        (root / "environments").mkdir()
        (root / "pyproject.toml").write_text('[tool.buildenv]\nenvironments_dir = "environments"\n')
        (root / "environments" / "b.yaml").write_text(TASKS_ENV)
        (root / "data").mkdir()
        pq.write_table(pa.table({"id": np.arange(examples, dtype=np.int64),
                                 "x": rng.normal(size=examples),
                                 "kind": rng.choice(["a", "b", "c"], examples)}),
                       root / "data" / "items.parquet")
        n = examples // 100
        pq.write_table(pa.table({"key": rng.choice(examples, n, replace=False).astype(str),
                                 "label": rng.choice(["neg", "pos"], n),
                                 "annotator": rng.choice(people, n)}),
                       root / "data" / "votes.parquet")
        _timed([sys.executable, "-m", "buildenv", "lock", "b"], root, env)
        runs = [_timed(command + [f"out{r}"], root, env) for r in range(repeat)]
        same = len({(root / f"out{r}" / "a0.json").read_bytes() for r in range(repeat)}) == 1
    w, c = _median(runs)
    print(f"tasks command: {examples:,} examples ({examples - n:,} unlabeled), 20 annotators, "
          f"overlap 3, median of {repeat}: {w:.2f} s wall / {c:.2f} s cpu (same files: {same})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-rows", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["derived", "functions", "model", "tasks", "loop",
                                           "reapply", "tasks-cli"])
    parser.add_argument("--sandbox", choices=["required", "preferred", "off"],
                        help="`[tool.buildenv] sandbox` of the derived benchmark's repository "
                        "(default: unset, `preferred` on Linux). The CPU figure leaves out a "
                        "sandboxed process's time (bubblewrap's PID namespace does not report "
                        "it to the build); `off` counts it.")
    args = parser.parse_args()
    if args.only in (None, "tasks"):
        tasks(args.examples)
    if args.only in (None, "model"):
        label_model(args.rows)
    if args.only in (None, "functions"):
        functions(args.rows)
    if args.only in (None, "derived"):
        derived(args.files, args.file_rows, args.repeat, args.sandbox)
    if args.only == "reapply":
        reapply(args.files, args.rows, args.repeat, args.sandbox)
    if args.only == "tasks-cli":
        tasks(args.examples)
        tasks_cli(args.examples, args.repeat)
    if args.only == "loop":
        loop(args.files, args.file_rows, args.repeat)


if __name__ == "__main__":
    main()
