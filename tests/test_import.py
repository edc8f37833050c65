"""`buildenv import gx|tfdv`: suites and schemas written by hand from the peers' documented
formats (GX expectation suite JSON, 0.x and 1.x; TFDV `Schema` text proto) become environment
columns; everything left out is listed with its reason and line. The semantic cases are the
peers' documented behaviours (nulls ignored, `mostly`, strict bounds, regex search, unique
counting every duplicated row, `min_domain_mass`, `presence.min_fraction`): the imported
columns must pass and fail the same data the peer would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import invoke_cli, write_parquet, write_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildenv.env.importers.textproto import Enum, TextProtoError, parse


def expectation(kind: str, column: str | None = None, style: str = "1.x", **kwargs) -> dict:
    if column is not None:
        kwargs = {"column": column, **kwargs}
    key = "type" if style == "1.x" else "expectation_type"
    return {key: f"expect_{kind}", "kwargs": kwargs, "meta": {}}


def suite(*expectations: dict, style: str = "1.x") -> str:
    if style == "1.x":
        doc = {"name": "hand_written", "id": "7d3c2f1e-0000-4000-8000-000000000000",
               "expectations": list(expectations), "meta": {"great_expectations_version":
                                                            "1.3.0"}, "notes": None}
    else:
        doc = {"expectation_suite_name": "hand_written", "data_asset_type": None,
               "expectations": list(expectations), "ge_cloud_id": None,
               "meta": {"great_expectations_version": "0.18.12"}}
    return json.dumps(doc, indent=2)


def run_import(root: Path, tool: str, text: str, *extra: str) -> tuple[int, str, str]:
    path = root / ("suite.json" if tool == "gx" else "schema.pbtxt")
    path.write_text(text, encoding="utf-8")
    return invoke_cli(["import", tool, path.name, "--dataset", "t", *extra], root)


def columns_of(out: str, dataset: str = "t") -> dict:
    return yaml.safe_load(out)["datasets"][dataset]["columns"]


# --- semantics: the imported columns judge data as the peer does --------------------------------

TYPES = {"int64": (pa.int64(), "int64"), "float64": (pa.float64(), "float64"),
         "string": (pa.string(), "str")}

GX_CASES = [
    # (case, dtype, values, expectation kind, kwargs, what GX says)
    ("between", "int64", [1, 2, 3, 4, 5], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5}, True),
    ("between-out", "int64", [0, 1, 2], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5}, False),
    ("between-nulls-ignored", "int64", [1, None, 5], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5}, True),
    ("between-min-only", "float64", [0.0, 100.5], "column_values_to_be_between",
     {"min_value": 0}, True),
    ("between-min-only-out", "float64", [-0.5, 3.0], "column_values_to_be_between",
     {"min_value": 0}, False),
    ("between-max-only-out", "int64", [11], "column_values_to_be_between", {"max_value": 10},
     False),
    ("strict-min-float-edge", "float64", [0.0, 1.0], "column_values_to_be_between",
     {"min_value": 0, "strict_min": True}, False),
    ("strict-min-float", "float64", [1e-300, 1.0], "column_values_to_be_between",
     {"min_value": 0, "strict_min": True}, True),
    ("strict-max-int-edge", "int64", [5], "column_values_to_be_between",
     {"max_value": 5, "strict_max": True}, False),
    ("strict-max-int", "int64", [4], "column_values_to_be_between",
     {"max_value": 5, "strict_max": True}, True),
    ("strict-min-int-fractional", "int64", [3], "column_values_to_be_between",
     {"min_value": 2.5, "strict_min": True}, True),
    ("between-mostly", "int64", [1, 2, 3, 4, 100], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5, "mostly": 0.8}, True),
    ("between-mostly-out", "int64", [1, 2, 3, 100, 100], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5, "mostly": 0.8}, False),
    ("between-mostly-of-non-null", "int64", [1, None, None, 100], "column_values_to_be_between",
     {"min_value": 1, "max_value": 5, "mostly": 0.5}, True),
    ("in-set", "string", ["a", "b", None], "column_values_to_be_in_set",
     {"value_set": ["a", "b"]}, True),
    ("in-set-out", "string", ["a", "c"], "column_values_to_be_in_set",
     {"value_set": ["a", "b"]}, False),
    ("in-set-mostly", "string", ["a", "c"], "column_values_to_be_in_set",
     {"value_set": ["a", "b"], "mostly": 0.5}, True),
    ("in-set-float", "float64", [0.5, 1.0, 1.0], "column_values_to_be_in_set",
     {"value_set": [0.5, 1.0]}, True),
    ("in-set-float-out", "float64", [0.5, 0.7], "column_values_to_be_in_set",
     {"value_set": [0.5, 1.0]}, False),
    ("in-set-int", "int64", [1, 2, 2], "column_values_to_be_in_set", {"value_set": [1, 2, 3]},
     True),
    ("not-null", "int64", [1, 2], "column_values_to_not_be_null", {}, True),
    ("not-null-out", "int64", [1, None], "column_values_to_not_be_null", {}, False),
    ("not-null-mostly", "int64", [1, None], "column_values_to_not_be_null", {"mostly": 0.5},
     True),
    ("not-null-mostly-out", "int64", [1, None, None], "column_values_to_not_be_null",
     {"mostly": 0.5}, False),
    ("non-null-share", "int64", [1, None, 3, 4],
     "column_proportion_of_non_null_values_to_be_between", {"min_value": 0.75}, True),
    ("non-null-share-out", "int64", [1, None, None, 4],
     "column_proportion_of_non_null_values_to_be_between", {"min_value": 0.75}, False),
    ("unique", "int64", [1, 2, 3, None, None], "column_values_to_be_unique", {}, True),
    ("unique-out", "int64", [1, 1, 2], "column_values_to_be_unique", {}, False),
    ("unique-mostly", "int64", [1, 1, 2, 3], "column_values_to_be_unique", {"mostly": 0.5},
     True),
    ("unique-mostly-out", "int64", [1, 1, 1, 2], "column_values_to_be_unique",
     {"mostly": 0.5}, False),
    ("unique-strings-out", "string", ["a", "b", "a"], "column_values_to_be_unique", {}, False),
    ("unique-share", "string", ["a", "b"], "column_proportion_of_unique_values_to_be_between",
     {"min_value": 1.0}, True),
    ("regex", "string", ["abc", "ab", None], "column_values_to_match_regex", {"regex": "^a"},
     True),
    ("regex-out", "string", ["abc", "bac"], "column_values_to_match_regex", {"regex": "^a"},
     False),
    ("regex-searches", "string", ["xbz"], "column_values_to_match_regex", {"regex": "b"}, True),
    ("regex-mostly", "string", ["a1", "a2", "b3", "a4"], "column_values_to_match_regex",
     {"regex": "^a", "mostly": 0.75}, True),
    ("regex-list-any", "string", ["a1", "b2"], "column_values_to_match_regex_list",
     {"regex_list": ["^a", "^b"], "match_on": "any"}, True),
    ("regex-list-any-out", "string", ["c"], "column_values_to_match_regex_list",
     {"regex_list": ["^a", "^b"], "match_on": "any"}, False),
    ("lengths", "string", ["ab", "abc"], "column_value_lengths_to_be_between",
     {"min_value": 2, "max_value": 3}, True),
    ("lengths-out", "string", ["a"], "column_value_lengths_to_be_between",
     {"min_value": 2, "max_value": 3}, False),
    ("lengths-are-characters", "string", ["é", "日"], "column_value_lengths_to_be_between",
     {"min_value": 1, "max_value": 1}, True),
    ("lengths-max-only-out", "string", ["abcd"], "column_value_lengths_to_be_between",
     {"max_value": 3}, False),
    ("length-equal", "string", ["ab", "cd"], "column_value_lengths_to_equal", {"value": 2},
     True),
    ("min-between", "int64", [0, 5], "column_min_to_be_between", {"min_value": 0}, True),
    ("min-between-out", "int64", [-1, 5], "column_min_to_be_between", {"min_value": 0}, False),
    ("max-between-out", "float64", [1.0, 2.5], "column_max_to_be_between", {"max_value": 2},
     False),
    ("distinct-in-set", "int64", [1, 1, 2], "column_distinct_values_to_be_in_set",
     {"value_set": [1, 2]}, True),
    ("distinct-in-set-out", "int64", [3], "column_distinct_values_to_be_in_set",
     {"value_set": [1, 2]}, False),
]


def validate_with(root: Path, columns: dict, values: list, arrow_type: pa.DataType) -> int:
    env = {"name": "imported", "datasets": {"t": {"uri": "data/t.parquet", "columns": columns}}}
    repo = write_repo(root, envs={"imported": yaml.safe_dump(env, sort_keys=False)})
    write_parquet(repo / "data" / "t.parquet", pa.table({"x": pa.array(values, arrow_type)}))
    code, out, err = invoke_cli(["validate", "imported"], repo)
    assert code in (0, 1), err
    return code


@pytest.mark.parametrize("case, dtype, values, kind, kwargs, success", GX_CASES,
                         ids=[c[0] for c in GX_CASES])
@pytest.mark.parametrize("style", ["1.x", "0.x"])
def test_imported_suite_judges_data_as_great_expectations(tmp_path, case, dtype, values, kind,
                                                          kwargs, success, style):
    arrow_type, gx_type = TYPES[dtype]
    text = suite(expectation("column_values_to_be_of_type", "x", style, type_=gx_type),
                 expectation(kind, "x", style, **kwargs), style=style)
    code, out, err = run_import(tmp_path, "gx", text)
    assert code == 0 and "BE903" not in err, err
    assert validate_with(tmp_path / "repo", columns_of(out), values, arrow_type) == \
        (0 if success else 1), columns_of(out)


TFDV_CASES = [
    ("int-domain", "INT", pa.int64(), [1, 5], "int_domain { min: 1 max: 5 }", True),
    ("int-domain-out", "INT", pa.int64(), [0, 3], "int_domain { min: 1 max: 5 }", False),
    ("float-domain-open", "FLOAT", pa.float64(), [0.0, 1e9], "float_domain { min: 0 }", True),
    ("float-domain-out", "FLOAT", pa.float64(), [-0.1], "float_domain { min: 0.0 }", False),
    ("string-domain", "BYTES", pa.string(), ["a", "b", None],
     'string_domain { value: "a" value: "b" }', True),
    ("string-domain-mass", "BYTES", pa.string(), ["a", "x"],
     'string_domain { value: "a" } distribution_constraints { min_domain_mass: 0.5 }', True),
    ("string-domain-mass-out", "BYTES", pa.string(), ["x", "y", "a"],
     'string_domain { value: "a" } distribution_constraints { min_domain_mass: 0.5 }', False),
    ("presence", "INT", pa.int64(), [1, None], "presence { min_fraction: 1.0 }", False),
    ("presence-share", "INT", pa.int64(), [1, None], "presence { min_fraction: 0.5 }", True),
    ("presence-share-out", "INT", pa.int64(), [1, None, None], "presence { min_fraction: 0.5 }",
     False),
    ("bool-domain-int", "INT", pa.int64(), [0, 1, 1], "bool_domain { }", True),
    ("bool-domain-int-out", "INT", pa.int64(), [0, 2], "bool_domain { }", False),
    ("bool-domain-bytes", "BYTES", pa.string(), ["yes", "no"],
     'bool_domain { true_value: "yes" false_value: "no" }', True),
]


@pytest.mark.parametrize("case, kind, arrow_type, values, body, success", TFDV_CASES,
                         ids=[c[0] for c in TFDV_CASES])
def test_imported_schema_judges_data_as_tfdv(tmp_path, case, kind, arrow_type, values, body,
                                             success):
    text = f'feature {{\n  name: "x"\n  type: {kind}\n  {body}\n}}\n'
    code, out, err = run_import(tmp_path, "tfdv", text)
    assert code == 0 and "BE904" not in err, err
    assert validate_with(tmp_path / "repo", columns_of(out), values, arrow_type) == \
        (0 if success else 1), columns_of(out)


# --- a whole suite: the YAML, and every expectation left out with its reason and line ----------

FLIGHTS_SUITE = suite(
    expectation("table_columns_to_match_set", column_set=["flight_id", "distance", "carrier"],
                exact_match=False),
    expectation("column_values_to_be_of_type", "flight_id", type_="int64"),
    expectation("column_values_to_be_unique", "flight_id"),
    expectation("column_values_to_not_be_null", "flight_id"),
    expectation("column_values_to_be_of_type", "distance", type_="DoubleType"),
    expectation("column_values_to_be_between", "distance", min_value=0, max_value=None),
    expectation("column_mean_to_be_between", "distance", min_value=100, max_value=2000),
    expectation("column_values_to_be_in_type_list", "carrier", type_list=["str", "object"]),
    expectation("column_values_to_match_regex", "carrier", regex="^[A-Z0-9]{2}$",
                mostly=0.99),
    expectation("column_value_lengths_to_equal", "carrier", value=2, mostly=0.95),
    expectation("column_values_to_be_in_set", "rating", value_set=[0.5, 1.0, 1.5, 2.0]),
    expectation("column_values_to_match_regex", "tail", regex=r"(?<=N)\d+"),
    expectation("column_values_to_be_between", "dest_code", min_value="A", max_value="Z"),
    expectation("column_pair_values_a_to_be_greater_than_b", column_A="arr", column_B="dep"),
    expectation("column_values_to_be_in_set", "origin", value_set=["JFK"],
                row_condition='carrier=="AA"', condition_parser="pandas"),
    expectation("table_row_count_to_be_between", min_value=1000),
)


def test_gx_suite_prints_columns_and_lists_what_it_left_out(tmp_path):
    code, out, err = run_import(tmp_path, "gx", FLIGHTS_SUITE)
    assert code == 0
    assert out.splitlines()[:4] == [
        "# buildenv import gx suite.json --dataset t",
        "# from the Great Expectations suite 'hand_written': 10 of 16 expectations translated",
        "# (the warnings list what was not, or only in part, and why)",
        "# Paste under an environment's `datasets:` and add the dataset's `uri`."]
    assert columns_of(out) == {  # a suite compares no distributions: nothing is monitored
        "flight_id": {"dtype": "int64", "nullable": False, "unique": True, "monitor": False},
        "distance": {"dtype": "float64", "range": [0, None], "monitor": False},
        "carrier": {"dtype": "string", "pattern": "^[A-Z0-9]{2}$", "length": [2, 2],
                    "max_violation_fraction": 0.01, "monitor": False},
        "rating": {"dtype": "float64", "domain": [0.5, 1.0, 1.5, 2.0], "monitor": False},
    }
    doc = yaml.safe_load(out)
    assert "monitoring" not in doc and "undeclared_columns" not in doc["datasets"]["t"]

    def line(needle: str) -> int:
        lines = FLIGHTS_SUITE.splitlines()
        return next(i for i, text in enumerate(lines) if needle in text) + 1

    def at(needle: str, occurrence: int = 0) -> int:
        lines = FLIGHTS_SUITE.splitlines()
        hits = [i + 1 for i, text in enumerate(lines) if needle in text]
        return hits[occurrence]

    assert err.splitlines() == sorted(err.splitlines(), key=lambda s: int(s.split(":")[1]))
    assert err.splitlines() == [
        f"suite.json:{line('column_mean_to_be_between')}: warning[BE903]: "
        "expect_column_mean_to_be_between on 'distance': not translated: an aggregate "
        "statistic of the column; buildenv constrains values (distributions are `buildenv "
        "drift`'s job)",
        f"suite.json:{line('column_values_to_be_in_type_list')}: warning[BE905]: column "
        "'carrier': tolerances: approximate: buildenv has one max_violation_fraction per "
        "column, and these differ (values_to_match_regex: 0.01, value_lengths: 0.05); the "
        "strictest, 0.01, applies to all of them",
        f"suite.json:{line('expect_column_values_to_be_in_set')}: warning[BE905]: column "
        "'rating': dtype: approximate: inferred as float64 from the values the suite compares "
        "with (no expect_column_values_to_be_of_type): check it",
        f"suite.json:{at('expect_column_values_to_match_regex', 1)}: warning[BE903]: "
        "expect_column_values_to_match_regex on 'tail': not translated: the regex uses syntax "
        "RE2 does not have (invalid perl operator: (?<=)",
        f"suite.json:{at('expect_column_values_to_be_between', 1)}: warning[BE903]: "
        "expect_column_values_to_be_between on 'dest_code': not translated: a range over "
        "strings; buildenv ranges are numeric or temporal",
        f"suite.json:{line('column_pair_values')}: warning[BE903]: "
        "expect_column_pair_values_a_to_be_greater_than_b: not translated: relates two "
        "columns; buildenv constraints are per column",
        f"suite.json:{at('expect_column_values_to_be_in_set', 1)}: warning[BE903]: "
        "expect_column_values_to_be_in_set on 'origin': not translated: applies only to rows "
        "matching a row_condition; buildenv constraints apply to every row",
        f"suite.json:{line('table_row_count')}: warning[BE903]: "
        "expect_table_row_count_to_be_between: not translated: a row count; buildenv "
        "constrains columns",
    ]
    assert run_import(tmp_path, "gx", FLIGHTS_SUITE, "--strict")[0] == 1


def test_imported_yaml_is_a_valid_environment(tmp_path):
    code, out, _ = run_import(tmp_path, "gx", FLIGHTS_SUITE)
    doc = yaml.safe_load(out)
    doc["datasets"]["t"]["uri"] = "data/t.parquet"
    repo = write_repo(tmp_path / "repo", envs={"imported": yaml.safe_dump(
        {"name": "imported", **doc}, sort_keys=False)})
    code, out, err = invoke_cli(["show", "imported"], repo)
    assert (code, err) == (0, "")


def test_gx_0x_suite_reads_the_same(tmp_path):
    one = suite(expectation("column_values_to_be_of_type", "a", type_="int64"),
                expectation("column_values_to_be_between", "a", min_value=1))
    zero = suite(expectation("column_values_to_be_of_type", "a", "0.x", type_="int64"),
                 expectation("column_values_to_be_between", "a", "0.x", min_value=1),
                 style="0.x")
    assert columns_of(run_import(tmp_path, "gx", one)[1]) == \
        columns_of(run_import(tmp_path, "gx", zero)[1]) == {"a": {"dtype": "int64",
                                                                  "range": [1, None],
                                                                  "monitor": False}}


def test_gx_types_map_to_dtypes():
    from buildenv.env.importers.gx import gx_dtype

    assert {name: gx_dtype(name) for name in (
        "int64", "Int32", "INTEGER", "BIGINT", "LongType", "IntegerType()", "float", "DOUBLE",
        "FloatType", "float32", "str", "object", "VARCHAR", "string[pyarrow]", "bool",
        "BooleanType", "datetime64[ns]", "datetime64[ns, UTC]", "TIMESTAMP", "DateType", "date",
        "list", "geometry")} == {
        "int64": "int64", "Int32": "int32", "INTEGER": "int32", "BIGINT": "int64",
        "LongType": "int64", "IntegerType()": "int32", "float": "float64", "DOUBLE": "float64",
        "FloatType": "float32", "float32": "float32", "str": "string", "object": "string",
        "VARCHAR": "string", "string[pyarrow]": "string", "bool": "bool",
        "BooleanType": "bool", "datetime64[ns]": "timestamp",
        "datetime64[ns, UTC]": "timestamp", "TIMESTAMP": "timestamp", "DateType": "date",
        "date": "date", "list": None, "geometry": None}


def test_gx_strict_bound_on_a_column_of_unknown_type_is_not_guessed(tmp_path):
    code, out, err = run_import(tmp_path, "gx", suite(
        expectation("column_values_to_be_between", "a", min_value=0, strict_min=True)))
    assert (code, columns_of(out)) == (0, {})
    assert "a strict bound on a column of unknown type" in err


def test_gx_partial_translations_are_reported_as_approximate(tmp_path):
    code, out, err = run_import(tmp_path, "gx", suite(
        expectation("table_columns_to_match_ordered_list", column_list=["a", "b"]),
        expectation("table_columns_to_match_set", column_set=["a", "b"]),
        expectation("column_values_to_be_of_type", "a", type_="int64"),
        expectation("column_values_to_be_of_type", "b", type_="float64"),
        expectation("column_min_to_be_between", "a", min_value=0, max_value=10),
        expectation("column_max_to_be_between", "b", min_value=5)))
    assert columns_of(out) == {"a": {"dtype": "int64", "range": [0, None], "monitor": False},
                               "b": {"dtype": "float64", "monitor": False}}
    assert yaml.safe_load(out)["datasets"]["t"]["undeclared_columns"] == "error"
    assert [line.split(": ", 1)[1] for line in err.splitlines()] == [
        "warning[BE905]: expect_table_columns_to_match_ordered_list: approximate: columns are "
        "declared and others are errors (undeclared_columns: error), but buildenv does not "
        "constrain their order",
        "warning[BE905]: expect_column_min_to_be_between on 'a': approximate: min_value is a "
        "range bound; max_value bounds the column's minimum itself, an aggregate, and is not "
        "translated",
        "warning[BE903]: expect_column_max_to_be_between on 'b': not translated: only "
        "min_value is given, which bounds the column's maximum itself, an aggregate"]


# --- a whole TFDV schema ---------------------------------------------------------------------------

TAXI_SCHEMA = """\
# Written by hand after tensorflow_metadata/proto/v0/schema.proto
feature {
  name: "trip_id"
  type: INT
  presence { min_fraction: 1.0 min_count: 1 }
  shape { dim { size: 1 } }
  int_domain { min: 1 }
}
feature {
  name: "payment_type"
  type: BYTES
  domain: "payment_type"
  presence { min_fraction: 0.98 min_count: 1 }
  distribution_constraints { min_domain_mass: 0.9 }
  drift_comparator { infinity_norm { threshold: 0.05 } }
  skew_comparator { infinity_norm { threshold: 0.01 } }
}
feature {
  name: "fare"
  type: FLOAT
  float_domain { min: 0.0 max: 1000.0 disallow_nan: true }
  value_count { min: 1 max: 1 }
  presence { min_count: 1 }
  drift_comparator { jensen_shannon_divergence { threshold: 0.1 } }
  annotation { comment: "Fare in USD." tag: "money" }
}
feature {
  name: "tips"
  type: FLOAT
  presence { min_count: 1 }
  not_in_environment: "SERVING"
}
feature {
  name: "tags"
  type: BYTES
  value_count { min: 0 max: 10 }
}
feature {
  name: "is_member"
  type: INT
  bool_domain { }
  unique_constraints { min: 1 max: 2 }
}
feature { name: "old_zone" type: INT lifecycle_stage: DEPRECATED }
feature {
  name: "pickup_time"
  type: BYTES
  time_domain { string_format: "%Y-%m-%d %H:%M:%S" }
}
string_domain {
  name: "payment_type"
  value: "Cash"
  value: "Credit Card"
  value: 'No "Charge"'
}
default_environment: "TRAINING"
default_environment: "SERVING"
dataset_constraints { min_examples_count: 100 }
"""


def test_tfdv_schema_prints_columns_drift_thresholds_and_what_it_left_out(tmp_path):
    code, out, err = run_import(tmp_path, "tfdv", TAXI_SCHEMA)
    assert code == 0
    doc = yaml.safe_load(out)
    assert doc["datasets"]["t"]["undeclared_columns"] == "error"  # SCHEMA_NEW_COLUMN
    assert doc["datasets"]["t"]["columns"] == {
        "trip_id": {"dtype": "int64", "nullable": False, "min_count": 1, "range": [1, None],
                    "monitor": False},
        "payment_type": {"dtype": "string", "max_null_fraction": 0.02, "min_count": 1,
                         "domain": ["Cash", "Credit Card", 'No "Charge"'],
                         "max_violation_fraction": 0.1},
        "fare": {"dtype": "float64", "min_count": 1, "allow_nan": False,
                 "range": [0.0, 1000.0], "description": "Fare in USD."},
        "tips": {"dtype": "float64", "min_count": 1, "monitor": False, "serving": False},
        "is_member": {"dtype": "int64", "required": False, "domain": [0, 1], "monitor": False},
        "pickup_time": {"dtype": "string", "required": False, "monitor": False},
    }
    # the schema's own comparators only: buildenv's built-in thresholds are turned off
    assert doc["monitoring"] == {
        "drift": {"categorical": {"linf": None}, "numeric": {"psi": None},
                  "columns": {"payment_type": {"linf": 0.05}, "fare": {"jsd": 0.1}}},
        "skew": {"categorical": {"linf": None, "mismatch": None},
                 "numeric": {"psi": None, "mismatch": None},
                 "columns": {"payment_type": {"linf": 0.01}}}}
    assert "6 of 8 features translated" in out

    def line(needle: str) -> int:
        return next(i for i, text in enumerate(TAXI_SCHEMA.splitlines()) if needle in text) + 1

    assert err.splitlines() == [
        f"schema.pbtxt:{line('name: ' + chr(34) + 'tags')}: warning[BE905]: schema: "
        "features not "
        "declared: approximate: TFDV knows tags, old_zone, but the dataset does not declare "
        "them (see their own warnings), so data holding them is reported as undeclared columns "
        "(undeclared_columns: error); declare them by hand, or lower undeclared_columns to warn",
        f"schema.pbtxt:{line('value_count { min: 0')}: warning[BE904]: feature 'tags': "
        "value_count: not translated: a list-valued feature (more than one value per "
        "example); buildenv columns hold one value per row (there is no list dtype)",
        f"schema.pbtxt:{line('unique_constraints')}: warning[BE904]: feature 'is_member': "
        "unique_constraints: not translated: bounds the number of distinct values, an "
        "aggregate (not the same as `unique: true`)",
        f"schema.pbtxt:{line('old_zone')}: warning[BE904]: feature 'old_zone': "
        "lifecycle_stage: not translated: TFDV does not validate a feature in stage "
        "DEPRECATED; not declared",
        f"schema.pbtxt:{line('time_domain')}: warning[BE904]: feature 'pickup_time': "
        "time_domain: not translated: a semantic domain (what the values mean, not which are "
        "allowed); the column is declared with its type",
        f"schema.pbtxt:{line('dataset_constraints')}: warning[BE904]: schema: "
        "dataset_constraints: not translated: dataset-level example counts; buildenv "
        "constrains columns",
    ]
    doc["datasets"]["t"]["uri"] = "data/t.parquet"
    repo = write_repo(tmp_path / "repo", envs={"taxi": yaml.safe_dump(
        {"name": "taxi", **doc}, sort_keys=False)})
    assert invoke_cli(["show", "taxi"], repo)[0] == 0


# --- bad input: exit 2, located ---------------------------------------------------------------------

def test_bad_input_is_a_usage_error_with_a_location(tmp_path):
    assert invoke_cli(["import", "gx", "missing.json", "--dataset", "t"], tmp_path) == (
        2, "", "buildenv: error[BE900]: cannot read 'missing.json': No such file or directory\n")
    code, out, err = run_import(tmp_path, "gx", '{\n  "expectations": [1,,]\n}\n')
    assert (code, out) == (2, "")
    assert err == "suite.json:2:22: error[BE901]: invalid JSON: Expecting value\n"
    code, _, err = run_import(tmp_path, "gx", '{"expectation_suite_name": "x"}')
    assert (code, err) == (2, "suite.json: error[BE901]: not a Great Expectations expectation "
                              "suite: no `expectations` list\n")
    code, _, err = run_import(tmp_path, "gx", '{"expectations": [{"kwargs": {}}]}')
    assert code == 2 and "expectations[0] is not an expectation" in err
    code, _, err = run_import(tmp_path, "tfdv", 'feature {\n  name: "x"\n  type INT\n}\n')
    assert (code, err) == (2, "schema.pbtxt:3:8: error[BE902]: invalid text proto: expected "
                              "':' or '{' after field 'type', found 'INT'\n")
    code, _, err = run_import(tmp_path, "tfdv", 'string_domain { name: "x" }\n')
    assert (code, err) == (2, "schema.pbtxt: error[BE902]: not a TFDV schema: no `feature { "
                              "... }` entries\n")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    code, _, err = invoke_cli(["import", "gx", "binary.json", "--dataset", "t"], tmp_path)
    assert code == 2 and "error[BE900]" in err


# --- the text-format reader -------------------------------------------------------------------------

def test_text_proto_reader():
    msg = parse('a: 1  b: -2.5e3  c: "x" \'y\'  # comment\n'
                'd { e: TRUE_ENUM f: true g: [1, 2, 3] }\n'
                'h < i: "\\303\\251\\n\\x41" >\n'
                'j: { k: inf l: -inf m: 0x1F n: 1.5f }\n'
                '[ext.name] { o: 1 }\n'
                '[type.googleapis.com/pkg.Msg] { p: 2 };\n')
    assert (msg.get("a"), msg.get("b"), msg.get("c")) == (1, -2500.0, "xy")
    d = msg.get("d")
    assert d.get("e") == "TRUE_ENUM" and isinstance(d.get("e"), Enum)
    assert d.get("f") is True and d.all("g") == [1, 2, 3]
    assert msg.get("h").get("i") == "é\nA"
    j = msg.get("j")
    assert (j.get("k"), j.get("l"), j.get("m"), j.get("n")) == (float("inf"), float("-inf"),
                                                                31, 1.5)
    assert msg.get("[ext.name]").get("o") == 1
    assert msg.get("[type.googleapis.com/pkg.Msg]").get("p") == 2
    assert msg.line_of("h") == 3 and msg.names()[:3] == ["a", "b", "c"]


@pytest.mark.parametrize("text, message, line, col", [
    ('a { b: 1', "expected a field name or '}', found end of file", 1, 9),
    ("a: 1\nb: @", "unexpected character '@'", 2, 4),
    ('a: "open\n', "unexpected character '\"'", 1, 4),
    ("a: [1, 2", "expected ',' or ']', found end of file", 1, 9),
    ("a: }", "expected a value, found '}'", 1, 4),
    ('a: "\\q"', "unknown escape \\q", 1, 4),
])
def test_text_proto_errors_are_located(text, message, line, col):
    with pytest.raises(TextProtoError) as info:
        parse(text)
    assert (str(info.value), info.value.line, info.value.col) == (message, line, col)


# --- arbitrary input: a translation or a located error, never a crash ----------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                     st.floats(allow_nan=True), st.text(max_size=8))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
_KINDS = st.sampled_from(sorted({"expect_" + c[3] for c in GX_CASES} | {
    "expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list",
    "expect_table_columns_to_match_set", "expect_column_min_to_be_between",
    "expect_column_mean_to_be_between", "expect_nothing_known"}))
_KWARG_NAMES = st.sampled_from(["column", "min_value", "max_value", "strict_min", "strict_max",
                                "mostly", "value_set", "regex", "regex_list", "match_on",
                                "type_", "type_list", "value", "column_set", "row_condition",
                                "parse_strings_as_datetimes", "exact_match"])
_EXPECTATIONS = st.lists(st.fixed_dictionaries({
    "type": _KINDS,
    "kwargs": st.dictionaries(_KWARG_NAMES, st.one_of(_JSON, st.just("x"), st.just("a")),
                              max_size=5)}), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EXPECTATIONS)
def test_any_suite_translates_or_is_refused(expectations):
    from buildenv.env.importers.common import render_yaml
    from buildenv.env.importers.gx import GxError, import_suite

    try:
        imported = import_suite(json.dumps({"name": "s", "expectations": expectations}))
    except GxError:
        return
    from buildenv.env.spec import Column

    text = render_yaml(imported, "t", "test")
    for column in (yaml.safe_load(text)["datasets"]["t"]["columns"] or {}).values():
        Column.model_validate(column)  # what is printed always loads


_PROTO_ATOMS = st.sampled_from(['feature', '{', '}', 'name:', '"x"', 'type:', 'INT', 'BYTES',
                                'FLOAT', 'int_domain', 'min:', 'max:', '1', '-2.5', 'inf', '[',
                                ']', ',', 'presence', 'min_fraction:', '0.5', 'string_domain',
                                'value:', '"a"', 'domain:', 'bool_domain', '<', '>', '#c\n',
                                '"\\x4"', "'q'", 'drift_comparator', 'infinity_norm',
                                'threshold:', '2', 'value_count', 'shape', 'dim', 'size:'])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PROTO_ATOMS, max_size=40).map(" ".join))
def test_any_text_proto_translates_or_is_refused_with_a_location(text):
    from buildenv.env.importers.tfdv import TfdvError, import_schema

    try:
        import_schema(text)
    except TfdvError as exc:
        refused = exc
    else:
        return
    assert str(refused)
    if str(refused).startswith("invalid text proto"):
        assert refused.line >= 1 and refused.col >= 1
