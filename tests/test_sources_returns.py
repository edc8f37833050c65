"""What a transform or a labeling function returns, as users write it (docs/derived.md "The
transform", docs/labels.md "Labeling functions"): pandas as pandas means it -- a Series votes
for the rows its index names, a `groupby` result keeps its keys in the index, a bare
`pd.DataFrame()` is nothing -- and what cannot be taken is a diagnostic naming the column or
the value's kind, never an internal error or a vote on the wrong row."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from buildenv.compile.label_analysis import _ratio
from buildenv.training import derive_run, label_run

CLASSES = pa.array(["comedy", "drama"], pa.string())
JOB = {"module": "rules/r.py", "taxonomy_version": 1}


def vote(fn: Any, batch: pd.DataFrame, tmp_path: Path) -> list[str | None]:
    array = label_run._call(fn, "f", batch, CLASSES, JOB, " (file f.parquet)", False, tmp_path,
                            tmp_path / "own", list(batch.columns))
    return array.to_pylist()


def refused(fn: Any, batch: pd.DataFrame, tmp_path: Path) -> dict:
    with pytest.raises(label_run._Failed) as caught:
        vote(fn, batch, tmp_path)
    return caught.value.diagnostic


def marked(fn: Any, columns: list[str]) -> Any:
    fn.__buildenv_labeling_function__ = {"columns": columns}
    return fn


BATCH = pd.DataFrame({"runtime": [90, 200, 120, 180]})


def test_a_series_in_another_row_order_votes_for_the_rows_its_index_names(tmp_path):
    def longest_two(batch):
        ordered = batch.sort_values("runtime")
        out = pd.Series([None] * len(ordered), index=ordered.index, dtype=object)
        out.iloc[-2:] = "drama"
        return out

    # taken by position, the two votes landed on the 3rd and 4th rows (120 and 180)
    assert vote(marked(longest_two, ["runtime"]), BATCH, tmp_path) == \
        [None, "drama", None, "drama"]


def test_a_series_made_from_an_array_is_taken_by_position(tmp_path):
    batch = BATCH.set_axis([10, 11, 12, 13])  # not 0..n-1: a fresh Series is positional
    fn = marked(lambda b: pd.Series(np.where(b["runtime"] > 150, "drama", None)), ["runtime"])
    assert vote(fn, batch, tmp_path) == [None, "drama", None, "drama"]


def test_a_series_of_some_rows_is_refused_with_the_reindex_that_makes_the_rest_abstain(
        tmp_path):
    fn = marked(lambda b: b.loc[b["runtime"] > 150, "runtime"].map(lambda _: "drama"),
                ["runtime"])
    found = refused(fn, BATCH, tmp_path)
    assert found["code"] == "BE873" and "a Series of 2 of the batch's 4 rows" in found["message"]
    assert "reindex(batch.index)" in found["hints"][0]


@pytest.mark.parametrize("value,says", [("comedy", "returned one str, not one value per row"),
                                        (None, "returned None, not one value per row"),
                                        (3, "returned one int, not one value per row")])
def test_one_value_instead_of_one_per_row_is_named_as_such(tmp_path, value, says):
    found = refused(marked(lambda b: value, ["runtime"]), BATCH, tmp_path)
    assert found["code"] == "BE873" and says in found["message"], found
    assert "values for a batch" not in found["message"]  # "comedy" is not six votes


def test_a_one_column_frame_is_refused_not_an_internal_error(tmp_path):
    fn = marked(lambda b: pd.DataFrame({"v": np.where(b["runtime"] > 100, "drama", None)}),
                ["runtime"])
    found = refused(fn, BATCH, tmp_path)  # Arrow's KeyError ended the process (BE345)
    assert found["code"] == "BE873" and "returned a DataFrame of 1 column(s)" in \
        found["message"], found


def test_a_series_of_another_type_is_named_with_its_dtype(tmp_path):
    found = refused(marked(lambda b: b["runtime"] > 100, ["runtime"]), BATCH, tmp_path)
    assert found["code"] == "BE873" and "Series of bool values" in found["message"]


def test_a_labeling_module_imports_its_package_relatively(tmp_path, monkeypatch, request):
    (tmp_path / "weakrules").mkdir()
    (tmp_path / "weakrules" / "words.py").write_text('WORD = "Laugh"\n')
    (tmp_path / "weakrules" / "rules.py").write_text(
        "import numpy as np\nimport buildenv\nfrom .words import WORD\n\n\n"
        '@buildenv.labeling_function(columns=["title"])\n'
        "def funny(batch):\n"
        '    return np.where(batch["title"].str.contains(WORD), "comedy", None)\n')
    monkeypatch.syspath_prepend(str(tmp_path))  # the runner puts the root on sys.path
    request.addfinalizer(lambda: [sys.modules.pop(n, None) for n in (
        "weakrules", "weakrules.rules", "weakrules.words")])
    job = {"dataset": "items", "module": "weakrules/rules.py", "label_set": "r",
           "classes": ["comedy"], "files": []}

    class Env:
        @staticmethod
        def restricted(_):
            return False

    monkeypatch.setattr(label_run, "narrowed", lambda env, names: Env)
    problems = label_run.run_functions_job(job, None, None, {}, {}, tmp_path,  # type: ignore
                                           tmp_path / "own", {})
    assert problems == []  # was BE872 "attempted relative import with no known parent package"
    funny = sys.modules["weakrules.rules"].funny
    assert vote(funny, pd.DataFrame({"title": ["A Laugh", "Sad"]}), tmp_path) == ["comedy", None]


class Ctx:
    def __init__(self) -> None:
        self.gate_errors: list = []

    def finish(self) -> None:
        pass


TJOB = {"transform": "transforms/t.py:t", "dataset": "out", "partitions": [],
        "columns": [("user_id", "int64"), ("n", "int64")]}


def transform(fn: Any, tmp_path: Path) -> tuple[pa.Table, int]:
    return derive_run._run_one(fn, Ctx(), TJOB, {"input_path": "", "values": {}}, False,
                               tmp_path, tmp_path / "own")


def transform_refused(fn: Any, tmp_path: Path) -> dict:
    with pytest.raises(derive_run.TransformError) as caught:
        transform(fn, tmp_path)
    return caught.value.diagnostic


def test_a_groupby_result_missing_its_key_column_says_it_is_the_index(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1, 2], "x": [1, 2, 3]})
    found = transform_refused(lambda ctx: frame.groupby("user_id").agg(n=("x", "size")),
                              tmp_path)
    assert found["code"] == "BE341" and "missing: user_id" in found["message"]
    assert "index" in found["hints"][0] and "reset_index()" in found["hints"][0]
    assert not any("declare every column" in h for h in found["hints"])  # nothing undeclared


def test_a_missing_column_of_an_unpartitioned_output_is_not_said_to_come_from_a_path(tmp_path):
    found = transform_refused(lambda ctx: pd.DataFrame({"user_id": [1]}), tmp_path)
    assert found["code"] == "BE341" and "missing: n" in found["message"]
    assert found["hints"] == ["return every declared column"]


def test_a_series_is_named_as_one_not_as_the_type_of_its_first_value(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1, 2]})
    found = transform_refused(lambda ctx: frame.groupby("user_id").size(), tmp_path)
    assert found["code"] == "BE341" and "returned a pandas Series, not a table" in \
        found["message"], found  # was "returned a piece of type int"
    assert 'reset_index(name="<its column>")' in found["hints"][1]


def test_columns_in_two_levels_are_named_as_such(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1], "x": [1.0, 2.0]})
    found = transform_refused(
        lambda ctx: frame.groupby("user_id").agg({"x": ["sum", "count"]}).reset_index(),
        tmp_path)
    assert found["code"] == "BE341" and "columns in 2 levels" in found["message"], found
    assert "named aggregation" in found["hints"][0]


def test_a_bare_empty_dataframe_is_nothing(tmp_path):
    def some(ctx):
        yield pd.DataFrame()
        yield pd.DataFrame({"user_id": [1], "n": [2]})

    table, _ = transform(some, tmp_path)
    assert table.to_pydict() == {"user_id": [1], "n": [2]}
    table, _ = transform(lambda ctx: pd.DataFrame(), tmp_path)
    assert table.num_rows == 0 and table.column_names == ["user_id", "n"]


def test_a_column_arrow_cannot_type_is_named_not_raised(tmp_path):
    mixed = pd.DataFrame({"user_id": [1, 2], "n": ["1", 2]})
    found = transform_refused(lambda ctx: mixed, tmp_path)
    assert found["code"] == "BE342" and "column 'n' (object)" in found["message"], found
    assert found["path"] == "transforms/t.py"


def test_a_column_returned_twice_is_named(tmp_path):
    frame = pd.DataFrame({"user_id": [1], "n": [2]})
    found = transform_refused(lambda ctx: pd.concat([frame, frame[["n"]]], axis=1), tmp_path)
    assert found["code"] == "BE341" and "column 'n' more than once" in found["message"], found


def test_nanosecond_timestamps_are_refused_with_the_rounding_that_fits(tmp_path):
    job = {**TJOB, "columns": [("user_id", "int64"), ("at", "timestamp")]}
    frame = pd.DataFrame({"user_id": [1], "at": [pd.Timestamp("2026-01-01 10:00:00.123456789")]})
    with pytest.raises(derive_run.TransformError) as caught:
        derive_run._run_one(lambda ctx: frame, Ctx(), job, {"input_path": "", "values": {}},
                            False, tmp_path, tmp_path / "own")
    found = caught.value.diagnostic
    assert found["code"] == "BE342" and '.dt.floor("us")' in found["hints"][0]


def test_shares_are_rounded_once():
    assert f"{_ratio(9, 41):.1%}" == f"{9 / 41:.1%}" == "22.0%"  # 21.9% when rounded twice
