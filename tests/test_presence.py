"""Presence, NaN, undeclared columns and empty domains (issue #27): `required`, `min_count`,
`allow_nan`, `undeclared_columns`, and `domain: []` meaning "no value allowed". Bad declarations
are located at their keys (exit 2); data breaking them fails naming the column and the count
(exit 1); restricted datasets show names and counts only; the validation cache tells the new
keys apart; an optional column that is absent reads as nulls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli, write_parquet, write_repo

from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Multiverse

SENTINEL = "QZSENTINEL27"

EVENTS = """\
name: ev
datasets:
  events:
    uri: data/events.parquet
    columns:
      id: {dtype: int64, nullable: false}
{columns}
"""


def repo_with(root: Path, columns: str, table: pa.Table, extra: str = "",
              fmt: str = "parquet") -> Path:
    text = EVENTS.replace("{columns}", columns) + extra
    if fmt == "csv":
        text = text.replace("data/events.parquet", "data/events.csv").replace(
            "    columns:", "    format: csv\n    columns:", 1)
    repo = write_repo(root, envs={"ev": text})
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, repo / "data" / "events.csv")
    else:
        write_parquet(repo / "data" / "events.parquet", table)
    return repo


def validate(repo: Path, *args: str) -> tuple[int, list[str]]:
    code, out, err = invoke_cli(["validate", "ev", *args], repo)
    return code, err.splitlines()


def test_bad_presence_declarations_are_located(tmp_path):
    repo = repo_with(tmp_path, "      a: {dtype: int64, required: false, min_count: 3}\n"
                               "      b: {dtype: string, allow_nan: false}\n"
                               "      c: {dtype: int64, min_count: 0}\n",
                     pa.table({"id": [1]}), extra="")
    (repo / "environments" / "ev.yaml").write_text(
        (repo / "environments" / "ev.yaml").read_text().replace(
            "    columns:", "    undeclared_columns: sometimes\n    columns:"))
    code, lines = validate(repo)
    assert code == 2
    assert lines == [
        "environments/ev.yaml:5:5: error[BE004]: datasets.events.undeclared_columns: "
        "'sometimes' is not one of 'error', 'warn' or 'ignore'",
        "environments/ev.yaml:8:42: error[BE034]: datasets.events.columns.a: min_count 3 asks "
        "for values, so the column cannot be optional: drop `required: false` or `min_count`",
        "environments/ev.yaml:9:26: error[BE039]: datasets.events.columns.b: a string column "
        "holds no NaN (allow_nan applies to float32 and float64 columns)",
        "environments/ev.yaml:10:25: error[BE004]: datasets.events.columns.c.min_count: Input "
        "should be greater than or equal to 1"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_optional_column_may_be_absent_a_required_one_may_not(tmp_path, fmt):
    table = pa.table({"id": [1, 2]})
    optional = repo_with(tmp_path / "o", "      note: {dtype: string, required: false}\n", table,
                         fmt=fmt)
    assert validate(optional) == (0, [])
    required = repo_with(tmp_path / "r", "      note: {dtype: string}\n", table, fmt=fmt)
    code, lines = validate(required)
    assert code == 1 and "error[BE206]: dataset 'events' has no column 'note'" in lines[0]
    # present, an optional column is checked like any other
    bad = repo_with(tmp_path / "b", "      note: {dtype: string, required: false, domain: [a]}\n",
                    pa.table({"id": [1], "note": ["z"]}), fmt=fmt)
    assert validate(bad)[0] == 1


def test_an_absent_optional_column_reads_as_nulls(tmp_path):
    repo = repo_with(tmp_path, "      note: {dtype: string, required: false}\n"
                               "      score: {dtype: float64, required: false}\n",
                     pa.table({"id": [1, 2, 3]}))
    project = Project(repo)
    res = Multiverse(project).resolve("ev")
    with Gate(project, res.env, "test").open("events", expect=None) as read:
        table = read.table(["id", "note", "score"])
    assert table.column_names == ["id", "note", "score"]
    assert table.schema.field("note").type == pa.string()
    assert table.schema.field("score").type == pa.float64()
    assert table.column("note").null_count == 3 and table.column("score").null_count == 3


def test_min_count_counts_non_null_values(tmp_path):
    columns = "      v: {dtype: float64, min_count: 3}\n"
    ok = repo_with(tmp_path / "ok", columns, pa.table({"id": [1, 2, 3, 4],
                                                       "v": [1.0, 2.0, float("nan"), None]}))
    assert validate(ok) == (0, [])  # NaN is a value, not a missing one
    short = repo_with(tmp_path / "short", columns, pa.table({"id": [1, 2, 3],
                                                            "v": [1.0, None, None]}))
    assert validate(short) == (1, [
        "environments/ev.yaml:7:27: error[BE214]: events.v: 1 non-null values, fewer than "
        "min_count 3 (3 rows)"])


def test_allow_nan_false_counts_nan_values(tmp_path):
    columns = "      v: {dtype: float32, allow_nan: false, range: [0, 10]}\n"
    table = pa.table({"id": [1, 2, 3, 4],
                      "v": pa.array([1.0, float("nan"), None, float("nan")], pa.float32())})
    code, lines = validate(repo_with(tmp_path / "a", columns, table))
    assert (code, lines) == (1, [
        "environments/ev.yaml:7:27: error[BE215]: events.v: 2 of 3 non-null values (fraction "
        "0.6667) are NaN, but the column is declared allow_nan: false"])
    clean = pa.table({"id": [1], "v": pa.array([1.0], pa.float32())})
    assert validate(repo_with(tmp_path / "b", columns, clean)) == (0, [])
    # without the key NaN passes, as before (NaN is neither below nor above a range)
    allowed = repo_with(tmp_path / "c", "      v: {dtype: float32, range: [0, 10]}\n", table)
    assert validate(allowed) == (0, [])


@pytest.mark.parametrize("setting, code, severity", [("error", 1, "error"), ("warn", 0, "warning"),
                                                     ("ignore", 0, None)])
def test_undeclared_columns(tmp_path, setting, code, severity):
    table = pa.table({"id": [1], "secret": [SENTINEL], "other": [2]})
    repo = repo_with(tmp_path, "", table)
    path = repo / "environments" / "ev.yaml"
    path.write_text(path.read_text().replace(
        "    columns:", f"    undeclared_columns: {setting}\n    columns:"))
    found, lines = validate(repo)
    assert found == code
    if severity is None:
        assert lines == []
    else:
        assert lines == [
            f"environments/ev.yaml:5:5: {severity}[BE213]: dataset 'events': 2 column(s) the "
            "environment does not declare (data/events.parquet): secret, other",
            "  hint: declare them under datasets.events.columns, or remove them from the data"]


def test_undeclared_columns_is_inherited_and_shown_only_when_set(tmp_path):
    repo = repo_with(tmp_path, "", pa.table({"id": [1], "x": [2]}))
    (repo / "environments" / "strict.yaml").write_text(
        "name: strict\nextends: ev\ndatasets:\n  events: {undeclared_columns: error}\n")
    code, out, _ = invoke_cli(["show", "ev"], repo)
    assert code == 0 and "undeclared_columns" not in out and "skew" not in out
    code, out, _ = invoke_cli(["show", "strict"], repo)
    assert code == 0 and "undeclared_columns: error" in out
    assert invoke_cli(["validate", "strict"], repo)[0] == 1


@pytest.mark.parametrize("dtype, values", [("string", ["a", None]), ("int64", [1, None]),
                                            ("float64", [0.5, None]), ("bool", [True, None])])
def test_an_empty_domain_allows_no_value(tmp_path, dtype, values):
    columns = f"      v: {{dtype: {dtype}, domain: []}}\n"
    code, lines = validate(repo_with(tmp_path / "a", columns, pa.table({"id": [1, 2],
                                                                         "v": values})))
    assert code == 1 and "error[BE204]: events.v: 1 of 1 non-null values (fraction 1) are " \
        "outside the domain" in lines[0]
    nulls = pa.table({"id": [1], "v": pa.array([None], pa.table({"v": values}).schema[0].type)})
    assert validate(repo_with(tmp_path / "b", columns, nulls)) == (0, [])


def test_restricted_datasets_show_names_and_counts_only(tmp_path):
    columns = ("      v: {dtype: float64, allow_nan: false, min_count: 5}\n"
               "      k: {dtype: string, domain: []}\n")
    table = pa.table({"id": [1, 2, 3], "v": [float("nan"), 1.0, None],
                      "k": [SENTINEL, None, None], "extra": [SENTINEL, "b", "c"]})
    repo = repo_with(tmp_path, columns, table,
                     extra="privacy:\n  restricted: [events]\n")
    path = repo / "environments" / "ev.yaml"
    path.write_text(path.read_text().replace(
        "    columns:", "    undeclared_columns: error\n    columns:"))
    code, out, err = invoke_cli(["validate", "ev", "--format", "json"], repo)
    assert code == 1
    found = {d["code"] for d in json.loads(out)["diagnostics"]}
    assert found == {"BE213", "BE214", "BE215", "BE204"}
    assert SENTINEL not in out + err
    for state in (repo / ".buildenv").rglob("*"):
        if state.is_file():
            assert SENTINEL.encode() not in state.read_bytes(), state


def test_the_cache_tells_the_new_keys_apart(tmp_path):
    """A result cached for one declaration is never replayed for another that judges the same
    bytes differently."""
    table = pa.table({"id": [1, 2], "v": [float("nan"), 1.0], "w": ["a", "b"]})
    repo = repo_with(tmp_path, "      v: {dtype: float64}\n      w: {dtype: string, domain: [a, b]}\n",
                     table)
    assert invoke_cli(["lock", "ev"], repo)[0] == 0

    def build_check(columns: str, undeclared: str = "") -> int:
        path = repo / "environments" / "ev.yaml"
        text = EVENTS.replace("{columns}", columns)
        if undeclared:
            text = text.replace("    columns:", f"    undeclared_columns: {undeclared}\n"
                                               "    columns:")
        path.write_text(text)
        from buildenv.data.validate.validate import validate_env

        project = Project(repo)
        res = Multiverse(project).resolve("ev")
        pins = {"events": json.loads((repo / "environments" / "ev.lock.json").read_text())[
            "datasets"]["events"]["digest"]}
        return 1 if any(p.is_error for p in validate_env(res, project, pins)) else 0

    assert build_check("      v: {dtype: float64}\n      w: {dtype: string, domain: [a, b]}\n") == 0
    assert build_check("      v: {dtype: float64, allow_nan: false}\n"
                       "      w: {dtype: string, domain: [a, b]}\n") == 1
    assert build_check("      v: {dtype: float64}\n      w: {dtype: string, domain: []}\n") == 1
    assert build_check("      v: {dtype: float64}\n") == 0
    assert build_check("      v: {dtype: float64}\n", "error") == 1
    assert build_check("      v: {dtype: float64, min_count: 3}\n"
                       "      w: {dtype: string}\n") == 1
    assert build_check("      v: {dtype: float64}\n      w: {dtype: string}\n"
                       "      z: {dtype: int64, required: false}\n") == 0


def test_partitioned_files_may_lack_an_optional_column(tmp_path):
    text = ("name: ev\ndatasets:\n  events:\n    uri: data/events/\n    columns:\n"
            "      id: {dtype: int64, nullable: false}\n"
            "      note: {dtype: string, required: false, domain: [a]}\n"
            "      must: {dtype: int64}\n")
    repo = write_repo(tmp_path, envs={"ev": text})
    folder = repo / "data" / "events"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1], "must": [1]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"id": [2], "note": ["z"], "must": [2]}), folder / "part-1.parquet")
    pq.write_table(pa.table({"id": [3], "note": ["a"]}), folder / "part-2.parquet")
    code, lines = validate(repo)
    assert code == 1
    assert [line.split(": ", 1)[1].split(":")[0] for line in lines if ": error[" in line] == [
        "error[BE204]", "error[BE206]"]
    assert "has no column 'must' in 1 of 3 file(s)" in "\n".join(lines)
    assert "note" not in next(line for line in lines if "BE206" in line)
