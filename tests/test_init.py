"""`buildenv init`: a project from nothing, and an environment inferred from data files that
validates, locks and builds unchanged; restricted values never written; bad input refused with
nothing written."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
from decimal import ROUND_CEILING, ROUND_FLOOR
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import invoke_cli

from buildenv.data.infer.datasets import _outward
from buildenv.env.spec import Environment

SENTINEL_TEXT = "Zq7sentinelplan"  # a restricted value: must appear nowhere init writes
SENTINEL_NUMBER = "4242.4242"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def events_rows(n: int = 300, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append([i + 1, ["basic", "premium", "yes"][i % 3],
                     "" if i % 25 == 3 else f"{rng.uniform(0, 987.3):.2f}",
                     f"2024-0{1 + i % 9}-1{i % 10}", f"2026-01-0{1 + i % 9}T1{i % 10}:30:00Z",
                     "true" if rng.random() < 0.35 or i == 0 else "false"])
    return rows


EVENTS_HEADER = ["user_id", "plan", "spend", "signup", "seen_at", "churned"]


def make_data(root: Path) -> Path:
    """events.csv (a label), users.parquet, clicks/ (hive-partitioned by date)."""
    write_csv(root / "data" / "events.csv", EVENTS_HEADER, events_rows())
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({
        "user_id": pa.array(np.arange(1, 301), pa.int64()),
        "age": pa.array(rng.integers(18, 90, 300), pa.int16()),
        "country": pa.array([["BR", "DE", "US"][i % 3] for i in range(300)]),
        "score": pa.array(rng.normal(50, 10, 300)),
    }), root / "data" / "users.parquet")
    for day in ("2026-09-01", "2026-09-02", "2026-09-03"):
        folder = root / "data" / "clicks" / f"date={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": pa.array(rng.integers(1, 300, 40), pa.int64()),
                                 "dwell": rng.exponential(3.0, 40)}),
                       folder / "part-0.parquet")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (but the data) and its digest."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not p.relative_to(root).as_posix().startswith("data/")}


# --- the project ------------------------------------------------------------------------------

def test_init_makes_a_project_and_is_safe_to_run_again(tmp_path):
    code, out, err = invoke_cli(["init"], tmp_path)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "created environments/",
        "created pyproject.toml ([tool.buildenv], training 'model')",
        "created .gitignore entries .buildenv/, dist/",
        "created trainings/model.py (write train(ctx) there)",
    ]
    assert (tmp_path / ".gitignore").read_text() == ".buildenv/\ndist/\n"
    before = snapshot(tmp_path)
    assert invoke_cli(["init"], tmp_path) == (
        0, f"{tmp_path.resolve()} is already a buildenv project\n", "")
    assert snapshot(tmp_path) == before
    code, out, _ = invoke_cli(["envs"], tmp_path)  # a project now: an empty one, exit 0
    assert (code, out) == (0, "NAME  EXTENDS  LOCK      DATASETS\n")


def test_init_adds_to_existing_files_without_rewriting_them(tmp_path):
    pyproject = '[project]\nname = "mine"\nversion = "1.0"\n'
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / ".gitignore").write_text("*.pyc\ndist\n")
    code, out, err = invoke_cli(["init", "--training", "churn"], tmp_path)
    assert (code, err) == (0, "")
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith(pyproject + "\n[tool.buildenv]\n")
    assert '[tool.buildenv.trainings.churn]\nentry = "trainings/churn.py:train"\n' in text
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\ndist\n.buildenv/\n"
    assert "added [tool.buildenv] and training 'churn' to pyproject.toml" in out


# --- inference, round trip --------------------------------------------------------------------

@pytest.fixture
def inferred(tmp_path) -> Path:
    root = make_data(tmp_path)
    code, out, err = invoke_cli(["init", "--env", "prod", "--data", "data/events.csv",
                                 "--data", "data/users.parquet", "--data", "data/clicks"], root)
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-2:] == [
        "wrote environments/prod.yaml: 3 datasets, 13 columns, label events.churned (guessed)",
        "next: read environments/prod.yaml through, then `buildenv lock prod` and `buildenv "
        "build model --env prod`"]
    return root


def test_what_is_inferred(inferred):
    text = (inferred / "environments" / "prod.yaml").read_text()
    doc = yaml.safe_load(text)
    Environment.model_validate(doc)
    events = doc["datasets"]["events"]
    assert (events["uri"], events["format"]) == ("data/events.csv", "csv")
    assert events["columns"] == {
        "user_id": {"dtype": "int64", "nullable": False, "range": [1, 300], "unique": True},
        "plan": {"dtype": "string", "nullable": False, "domain": ["basic", "premium", "yes"]},
        "spend": {"dtype": "float64", "max_null_fraction": 0.04, "range": [2, 982]},
        "signup": {"dtype": "date", "nullable": False, "range": ["2024-01-10", "2024-09-19"]},
        "seen_at": {"dtype": "timestamp", "nullable": False,
                    "range": ["2026-01-01T00:00:00Z", "2026-01-10T00:00:00Z"]},
        "churned": {"dtype": "bool", "nullable": False},
    }
    assert "'yes'" in text  # a string that YAML would read as a bool is quoted
    assert "spend: {dtype: float64, max_null_fraction: 0.04, range: [2, 982]}  # 4.0% null" \
        in text
    users = doc["datasets"]["users"]
    assert users["columns"]["age"] == {"dtype": "int16", "nullable": False, "range": [18, 89]}
    assert users["columns"]["country"]["domain"] == ["BR", "DE", "US"]
    clicks = doc["datasets"]["clicks"]
    assert clicks["uri"] == "data/clicks/" and clicks["partitions"] == ["date"]
    assert clicks["columns"]["date"] == {"dtype": "date", "nullable": False,
                                         "range": ["2026-09-01", "2026-09-03"]}
    assert doc["label"] == {"dataset": "events", "column": "churned", "classes": [False, True]}
    assert doc["serving"]["stack"] == "sklearn"
    source = (inferred / "trainings" / "model.py").read_text()
    assert 'CATEGORICAL = ["plan"]' in source and 'NUMERIC = ["spend"]' in source


def test_init_matches_the_examples_label_and_named_datasets(tmp_path):
    root = make_data(tmp_path)
    code, _, err = invoke_cli(["init", "--env", "prod", "--data", "ev=data/events.csv",
                               "--label", "ev.plan"], root)
    assert (code, err) == (0, "")
    doc = yaml.safe_load((root / "environments" / "prod.yaml").read_text())
    assert doc["label"] == {"dataset": "ev", "column": "plan",
                            "classes": ["basic", "premium", "yes"]}


@pytest.mark.slow
def test_the_inferred_environment_validates_locks_and_builds_unchanged(inferred):
    before = (inferred / "environments" / "prod.yaml").read_bytes()
    assert invoke_cli(["show", "prod"], inferred)[0] == 0
    assert invoke_cli(["check", "model", "--env", "prod"], inferred) == (
        0, "model @ prod: static checks passed\n", "")  # constants folded: no BE105
    code, out, err = invoke_cli(["lock", "prod"], inferred)
    assert code == 0, err
    code, out, err = invoke_cli(["validate", "prod", "--no-progress"], inferred)
    assert (code, out, err) == (0, "prod: 3 dataset(s) valid\n", "")
    code, out, err = invoke_cli(["build", "model", "--env", "prod", "--no-register",
                                 "--no-progress"], inferred, subprocess=True)
    assert code == 0, err
    assert out.startswith("model @ prod: built (not built before) -> dist/model/prod")
    assert (inferred / "environments" / "prod.yaml").read_bytes() == before
    lineage = json.loads((inferred / "dist/model/prod/buildenv.json").read_text())
    assert set(lineage["inputs"]) == {"plan", "spend"}


# --- restricted data --------------------------------------------------------------------------

def test_restricted_values_are_never_written(tmp_path):
    rows = events_rows()
    for i, row in enumerate(rows):
        if i % 50 == 7:
            row[1], row[2] = SENTINEL_TEXT, SENTINEL_NUMBER  # a domain value, a range end
    write_csv(tmp_path / "data" / "events.csv", EVENTS_HEADER, rows)
    code, out, err = invoke_cli(["init", "--env", "prod", "--data", "data/events.csv",
                                 "--restricted", "events", "--label", "events.plan"], tmp_path)
    assert code == 0, err
    for text in (out, err, *(p.read_text(errors="replace") for p in tmp_path.rglob("*")
                             if p.is_file() and "data" not in p.parts)):
        assert SENTINEL_TEXT not in text and SENTINEL_NUMBER not in text and "4242" not in text
    doc = yaml.safe_load((tmp_path / "environments" / "prod.yaml").read_text())
    columns = doc["datasets"]["events"]["columns"]
    assert not any("range" in c or "domain" in c for c in columns.values())
    assert columns["spend"] == {"dtype": "float64", "max_null_fraction": 0.04}
    assert doc["privacy"] == {"restricted": ["events"]}
    assert doc["label"] == {"dataset": "events", "column": "plan"}  # classes would be values
    assert "fill ranges and domains from `buildenv stats prod --dataset events`" in \
        (tmp_path / "environments" / "prod.yaml").read_text()
    log = [json.loads(line) for line in
           (tmp_path / ".buildenv" / "audit" / "log.jsonl").read_text().splitlines()]
    assert [(r["purpose"], r["environment"], r["dataset"], r["rows"]) for r in log] == [
        ("init", "prod", "events", 300)]


# --- bad input: a diagnostic, the right exit, nothing written ---------------------------------

@pytest.mark.parametrize("name, content, code, expected", [
    ("empty.csv", b"", 1, "data/empty.csv: error[BE042]: dataset 'empty': 'data/empty.csv' is "
     "empty (0 bytes): nothing to infer"),
    ("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), 1,
     "data/image.csv: error[BE043]: dataset 'image': 'data/image.csv' is neither CSV text nor "
     "a Parquet file"),
    ("fake.parquet", b"a,b\n1,2\n", 1, "data/fake.parquet: error[BE043]: dataset 'fake': "
     "'data/fake.parquet' is not a Parquet file (it does not start with PAR1)"),
    ("twice.csv", b"a,b,a\n1,2,3\n", 1, "data/twice.csv: error[BE043]: dataset 'twice': "
     "'data/twice.csv' names column 'a' twice in its header"),
    ("ragged.csv", b"a,b\n1,2\n3,4,5\n", 1, "error[BE053]: dataset 'ragged'"),
    ("2026-09.csv", b"a\n1\n", 0, None),  # named after its directory: data
])
def test_bad_files_are_refused_with_nothing_written(tmp_path, name, content, code, expected):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).write_bytes(content)
    got, out, err = invoke_cli(["init", "--env", "prod", "--data", f"data/{name}"], tmp_path)
    assert got == code, err
    if expected is None:
        assert yaml.safe_load((tmp_path / "environments/prod.yaml").read_text())["datasets"] \
            == {"data": {"uri": "data/2026-09.csv", "format": "csv",
                         "columns": {"a": {"dtype": "int64", "nullable": False,
                                           "range": [1, 1]}}}}
        return
    assert out == ""
    assert expected in err.splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written


def test_usage_errors_exit_2_with_nothing_written(tmp_path):
    make_data(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.csv"
    outside.write_text("a\n1\n")
    cases = {
        ("--env", "prod"): "error[BE004]: --env and --data go together",
        ("--data", "data/events.csv"): "error[BE004]: --env and --data go together",
        ("--env", "prod", "--data", str(outside)): "error[BE015]: --data",
        ("--env", "prod", "--data", "data/events.csv", "--restricted", "event"):
            "error[BE009]: --restricted event: no --data dataset is named 'event'",
        ("--env", "prod", "--data", "data/events.csv", "--data", "data/events.csv"):
            "error[BE046]: --data data/events.csv: dataset 'events' is given twice",
        ("--env", "prod", "--data", "data/missing.csv"): "error[BE053]: --data data/missing.csv",
        ("--env", "prod", "--data", "data/events.csv", "--label", "events.churn"):
            "error[BE010]: --label events.churn: no such column",
        ("--env", "no/good", "--data", "data/events.csv"): "error[BE004]: --env 'no/good'",
    }
    for args, expected in cases.items():
        code, out, err = invoke_cli(["init", *args], tmp_path)
        assert (code, out) == (2, ""), (args, err)
        assert expected in err, (args, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], args
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "prod.yaml").write_text("name: prod\n")
    code, _, err = invoke_cli(["init", "--env", "prod", "--data", "data/events.csv"], tmp_path)
    assert code == 2 and "error[BE041]: environments/prod.yaml already exists" in err
    assert (tmp_path / "environments" / "prod.yaml").read_text() == "name: prod\n"


def test_mixed_values_choose_the_wider_type_and_say_so(tmp_path):
    rows = [[i, str(10000 + i) if i != 117 else "N/A", f"{i}.5" if i % 2 else str(i)]
            for i in range(300)]
    write_csv(tmp_path / "data" / "mixed.csv", ["id", "zip", "x"], rows)
    code, out, err = invoke_cli(["init", "--env", "prod", "--data", "data/mixed.csv"], tmp_path)
    assert code == 0
    assert err.splitlines() == [
        "data/mixed.csv: warning[BE044]: dataset 'mixed': column 'x' mixes kinds of values: "
        "150 integer (first at data row 1), 150 decimal (first at data row 2); declared float64, "
        "the narrowest dtype that holds them all",
        "  hint: if the odd values are mistakes (a null written `N/A`), fix the data and run "
        "init again",
        "data/mixed.csv: warning[BE044]: dataset 'mixed': column 'zip' mixes kinds of values: "
        "299 integer (first at data row 1), 1 other text (first at data row 118); declared "
        "string, the narrowest dtype that holds them all",
        "  hint: if the odd values are mistakes (a null written `N/A`), fix the data and run "
        "init again",
    ]
    columns = yaml.safe_load((tmp_path / "environments/prod.yaml").read_text())["datasets"][
        "mixed"]["columns"]
    assert columns["zip"] == {"dtype": "string", "nullable": False}
    assert columns["x"] == {"dtype": "float64", "nullable": False, "range": [0, 300]}


def test_a_header_without_rows_and_unreadable_parquet_columns(tmp_path):
    write_csv(tmp_path / "data" / "head.csv", ["a", "b"], [])
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()),
                             "price": pa.array([1, 2], pa.decimal128(10, 2)),
                             "tags": pa.array([["x"], []])}), tmp_path / "data" / "odd.parquet")
    code, _, err = invoke_cli(["init", "--env", "prod", "--data", "data/head.csv",
                               "--data", "data/odd.parquet"], tmp_path)
    assert code == 0, err
    assert "warning[BE042]: dataset 'head': 'data/head.csv' has no rows" in err
    assert "warning[BE045]: dataset 'odd': column 'price' is left out: stored as " \
        "decimal128(10, 2), which no environment dtype reads" in err
    text = (tmp_path / "environments/prod.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["datasets"]["head"]["columns"] == {"a": {"dtype": "string"},
                                                  "b": {"dtype": "string"}}
    assert set(doc["datasets"]["odd"]["columns"]) == {"id"}
    assert "# left out: 'tags' (stored as list<element: string>" in text


def test_hive_directories_that_disagree_are_refused(tmp_path):
    for rel in ("date=2026-09-01/part-0.parquet", "part-1.parquet"):
        target = tmp_path / "data" / "ev" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [1]}), target)
    code, out, err = invoke_cli(["init", "--env", "prod", "--data", "data/ev"], tmp_path)
    assert (code, out) == (1, "")
    assert "error[BE062]: dataset 'ev': 'data/ev/part-1.parquet' is not under date=..." in err


def test_ranges_round_outward_to_three_significant_digits():
    assert _outward(1.234, 587.3, False, ROUND_FLOOR) == 1
    assert _outward(587.3, 1.234, False, ROUND_CEILING) == 588
    assert _outward(0.0123, 0.987, False, ROUND_FLOOR) == 0.012
    assert _outward(-3.14159, 2.0, False, ROUND_FLOOR) == -3.15
    assert _outward(1950, 2026, True, ROUND_FLOOR) == 1950
    assert _outward(2026, 1950, True, ROUND_CEILING) == 2030  # docs/commands.md says so
    assert _outward(123456, 7, True, ROUND_CEILING) == 124000
    assert _outward(89, 18, True, ROUND_CEILING) == 89
    assert _outward(0, 0, True, ROUND_CEILING) == 0


def test_init_needs_no_project_but_finds_one(tmp_path):
    """Run in a subdirectory of a project, init adds to that project."""
    make_data(tmp_path)
    assert invoke_cli(["init"], tmp_path)[0] == 0
    inner = tmp_path / "data"
    code, out, err = invoke_cli(["init", "--env", "q", "--data", "events.csv"], inner)
    assert code == 0, err
    assert (tmp_path / "environments" / "q.yaml").is_file()
    assert yaml.safe_load((tmp_path / "environments" / "q.yaml").read_text())["datasets"][
        "events"]["uri"] == "data/events.csv"
    assert not (inner / "environments").exists()
    assert os.listdir(tmp_path / "trainings") == ["model.py"]


MEMORY_PROBE = r"""
import sys
from pathlib import Path
from buildenv.data.gate import formats
formats.CSV_BLOCK = 1 << 20  # pyarrow reads ~30 blocks ahead: a small block keeps the test small
from buildenv.data.infer import profile
profile.UNIQUE_BUDGET = 1 << 20  # a key column buffers this much before spilling (16 MiB by
# default: below it both files' ids fit in memory, and the peak would follow the row count)
from buildenv.cli import main
sys.argv = ["buildenv", "init", "--env", sys.argv[1], "--data", sys.argv[2], "--no-progress"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) // 1024)
"""


def big_csv(path: Path, rows: int) -> int:
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(7)
    with pacsv.CSVWriter(path, pa.schema([("id", pa.int64()), ("plan", pa.string()),
                                          ("x", pa.float64()), ("day", pa.string())])) as out:
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            out.write_table(pa.table({
                "id": np.arange(start, start + n),
                "plan": np.array(["basic", "premium", "free"])[rng.integers(0, 3, n)],
                "x": rng.normal(size=n),
                "day": pa.array([f"2026-01-{d:02d}" for d in rng.integers(1, 29, n)])}))
    return path.stat().st_size


@pytest.mark.slow
def test_inference_streams_in_bounded_memory(tmp_path):
    """Peak memory does not grow with the file: three times the rows, about the same peak (a
    10 GB file streams through the same batches)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    (tmp_path / "data").mkdir()
    small = big_csv(tmp_path / "data" / "small.csv", 700_000)
    large = big_csv(tmp_path / "data" / "large.csv", 2_100_000)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    peaks = {}
    for name in ("small", "large"):
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, name, f"data/{name}.csv"],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr
        peaks[name] = int(proc.stdout.splitlines()[-1])
    grown = (large - small) >> 20
    # a read of the whole file grows by at least the added 65 MiB (as Arrow, more); streaming
    # grows by what batches are in flight: 6-8 MiB on a quiet machine, 18 MiB once under CI's
    # load (the reader's threads run ahead), so half of the growth is the line
    assert peaks["large"] - peaks["small"] < grown / 2, (peaks, grown)
    doc = yaml.safe_load((tmp_path / "environments" / "large.yaml").read_text())
    assert doc["datasets"]["large"]["columns"]["id"] == {
        "dtype": "int64", "nullable": False, "range": [0, 2100000], "unique": True}


def test_a_restricted_hive_directory_is_written_with_partitions_off(tmp_path):
    """A restricted dataset's paths give no column (their values would be paths the lock and
    diagnostics name, BE060): init reads its stored columns only, writes `partitions: []`,
    and the environment locks as written. Files that also store the directory's column made
    init fail BE067, naming the paths."""
    for day in ("2026-09-01", "2026-09-02"):
        folder = tmp_path / "data" / "visits" / f"city=Paris/date={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": pa.array([1, 2, 3], pa.int64()),
                                 "date": pa.array([dt.date.fromisoformat(day)] * 3),
                                 "bought": [True, False, True]}), folder / "part-0.parquet")
    code, _, err = invoke_cli(["init", "--env", "p", "--data", "data/visits",
                               "--restricted", "visits"], tmp_path)
    assert code == 0, err
    doc = yaml.safe_load((tmp_path / "environments" / "p.yaml").read_text())
    visits = doc["datasets"]["visits"]
    assert visits["partitions"] == [] and sorted(visits["columns"]) == [
        "bought", "date", "user_id"]
    code, _, err = invoke_cli(["lock", "p"], tmp_path)
    assert code == 0, err


def test_uri_escaped_hive_keys_and_values_are_decoded(tmp_path):
    """`my%20col=1/` is column `my col` (pyarrow reads it so, and so does the gate): init
    refused it with BE062 "'my%20col=1' is not 'my%20col=<value>'". Values are typed decoded:
    `ts=2026-09-01 10%3A00%3A00` (Spark's spelling) is a timestamp."""
    for i, stamp in enumerate(("2026-09-01 10%3A00%3A00", "2026-09-02 11%3A30%3A00")):
        folder = tmp_path / "data" / "hits" / f"my%20col={i + 1}" / f"ts={stamp}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"n": [i, i + 1], "ok": [True, False]}), folder / "part-0.parquet")
    code, _, err = invoke_cli(["init", "--env", "p", "--data", "data/hits"], tmp_path)
    assert code == 0, err
    hits = yaml.safe_load((tmp_path / "environments" / "p.yaml").read_text())["datasets"]["hits"]
    assert hits["partitions"] == ["my col", "ts"]
    assert hits["columns"]["my col"]["dtype"] == "int64"
    assert hits["columns"]["ts"]["dtype"] == "timestamp"
    assert invoke_cli(["lock", "p"], tmp_path)[0] == 0
    code, _, err = invoke_cli(["validate", "p"], tmp_path)
    assert code == 0, err


def test_the_stray_file_among_hive_directories_is_the_one_named(tmp_path):
    """The layout most files share is the dataset's: a flat file that sorts first
    (`extra.parquet` before `year=...`) is named, not every partitioned file after it."""
    for year in ("2024", "2025"):
        folder = tmp_path / "data" / "ev" / f"year={year}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"n": [1, 2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"n": [3]}), tmp_path / "data" / "ev" / "extra.parquet")
    code, _, err = invoke_cli(["init", "--env", "p", "--data", "data/ev"], tmp_path)
    assert code == 1
    assert "error[BE062]: dataset 'ev': 'data/ev/extra.parquet' is not under year=... like 2 " \
        "of 3 files (e.g. 'year=2024/part-0.parquet')" in err, err


def test_a_directory_of_one_file_is_said_to_hold_one_file(tmp_path):
    """The draft's comment counted `in 1 files`."""
    folder = tmp_path / "data" / "one" / "region=eu"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"n": [1, 2], "ok": [True, False]}), folder / "part-0.parquet")
    code, _, err = invoke_cli(["init", "--env", "p", "--data", "data/one/"], tmp_path)
    assert code == 0, err
    text = (tmp_path / "environments" / "p.yaml").read_text()
    assert "# 2 rows in 1 file\n" in text, text
