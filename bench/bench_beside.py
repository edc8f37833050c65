"""Does work beside a scikit-learn fit overlap it? (issue 19, session 7 (h57))

The training process runs Python work in a thread while the user's full fit runs on the main
one (`training/beside.py`: skops' table of safe types, MLflow's import and its requirements
table): it is meant to use the core a threads=1 fit leaves free. This measures whether it does,
for the bench's HistGradientBoostingClassifier: each case is a fresh process that imports
scikit-learn, reads the same rows and then either fits and does that work after (`serial`)
or starts the work in a thread and fits (`beside`). When the fit holds the interpreter's lock
for most of its Python steps, the two threads take turns and `beside` is no faster than
`serial` (and the fit inside it is slower by about the work).

`now` (session 8, h61) is `beside` with the work that is left since the MLflow files of a skops
model are written without MLflow (`training/mlmodel_writer.py`): skops' table only. The CPU
seconds of each process (steadier than wall time on a loaded machine) show the work removed.
`cached` (session 9, h74) is `now` with skops' scikit-learn table handed over as the build
does from its cache (`training/skops_table.py`): skops' import without walking every
scikit-learn module.

    .venv/bin/python bench/bench_beside.py [--repeats 3] [--iterations 200]

About 1.5 min on a quiet machine. Prints the medians, beside / serial and now / beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MAIN_PY, alternate, machine, run, work_dir

ROWS, FEATURES, SEED = 200_000, 12, 20261207

CASE_PY = '''"""One case: fit, and the training process's beside-the-fit work, serially or beside."""
import sys, threading, time
mode, iterations = sys.argv[1], int(sys.argv[2])
started = time.perf_counter()
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
df = pq.read_table("rows.parquet").to_pandas()
features = [c for c in df.columns if c != "label"]


def work():
    if mode == "cached":  # session 9: skops' scikit-learn table from the build's cache
        import json
        from buildenv.training import skops_table
        skops_table.offer(json.loads(open("table.json").read()))
        skops_table.import_with()
        return
    from buildenv.core.model_runtime import import_skops
    import_skops()
    if mode == "now":  # MLflow is no longer imported in the training process
        return
    import mlflow.sklearn  # noqa: F401
    from mlflow.utils.requirements_utils import _init_packages_to_modules_map
    _init_packages_to_modules_map()


def fit():
    HistGradientBoostingClassifier(max_iter=iterations, learning_rate=0.05,
                                   early_stopping=False, random_state=0
                                   ).fit(df[features], df["label"].to_numpy())


before = time.perf_counter()
if mode == "serial":
    fit()
    fitted = time.perf_counter()
    work()
else:
    thread = threading.Thread(target=work)
    thread.start()
    fit()
    fitted = time.perf_counter()
    thread.join()
print(f"{fitted - before:.3f} {time.perf_counter() - before:.3f}")
'''


def make_rows(root: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = root / "rows.parquet"
    if target.is_file():
        return
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(ROWS, FEATURES))
    label = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=ROWS)) > 0
    columns = {f"x{i}": x[:, i] for i in range(FEATURES)}
    pq.write_table(pa.table({**columns, "label": label}), target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    root = work_dir("beside")
    make_rows(root)
    (root / "case.py").write_text(CASE_PY)
    table = run([MAIN_PY, "-c", "import json; from buildenv.training import skops_table; "
                 "skops_table.import_with(); print(json.dumps(skops_table.fresh()))"], cwd=root)
    (root / "table.json").write_text(table.stdout)
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONHASHSEED": "0"}
    print(machine(), flush=True)

    def case(mode: str):
        return lambda: run([MAIN_PY, "case.py", mode, str(args.iterations)], cwd=root,
                           env={**os.environ, **env})

    series = alternate({"serial": case("serial"), "beside": case("beside"),
                        "now": case("now"), "cached": case("cached")}, args.repeats)
    medians = {}
    for name, s in series.items():
        fits = [float(r.stdout.split()[0]) for r in s.runs]
        totals = [float(r.stdout.split()[1]) for r in s.runs]
        medians[name] = statistics.median(totals)
        print(f"{name}: fit {statistics.median(fits):.2f} s, fit + work "
              f"{medians[name]:.2f} s (process {s.median:.2f} s, {s.cpu:.2f} s CPU)")
    print(f"beside / serial: {medians['beside'] / medians['serial']:.2f}x "
          "(below 1: the work overlaps the fit)")
    print(f"now / beside: {medians['now'] / medians['beside']:.2f}x wall, "
          f"{series['now'].cpu / series['beside'].cpu:.2f}x CPU")
    print(f"cached / now: {medians['cached'] / medians['now']:.2f}x wall, "
          f"{series['cached'].cpu / series['now'].cpu:.2f}x CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
