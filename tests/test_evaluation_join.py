"""The evaluation rows' inferred join: another dataset that shares column names with the rows'
dataset and serves more columns is joined on those names -- never on the label column, which
the rows are scored on and the served frame leaves out (merging on it was an internal error
of every build, BE305 with no message)."""

from __future__ import annotations

from conftest import invoke_cli, write_repo

from buildenv.data.evaluation import join_plan
from buildenv.env.evaluation_rules import slice_columns
from buildenv.env.spec import Environment


def environment(extra: dict) -> Environment:
    return Environment.model_validate({
        "name": "prod",
        "datasets": {
            "flights": {"uri": "data/flights/", "columns": {
                "carrier": {"dtype": "string"}, "distance": {"dtype": "float64"},
                "late": {"dtype": "bool"}, "month": {"dtype": "int64"}}},
            "sales": {"uri": "data/sales/", "columns": extra},
        },
        "label": {"dataset": "flights", "column": "late", "classes": [False, True]},
        "serving": {"stack": "sklearn", "ops": ["sklearn.linear_model.*"]},
    })


def test_the_label_column_is_never_a_join_key():
    env = environment({"carrier": {"dtype": "string"}, "late": {"dtype": "bool"},
                       "city": {"dtype": "string"}})
    assert join_plan(env) == ({"sales": ["carrier"]}, True)


def test_a_dataset_sharing_only_the_label_column_is_not_joined():
    env = environment({"late": {"dtype": "bool"}, "city": {"dtype": "string"}})
    assert join_plan(env) == ({}, True)


def test_a_written_join_on_the_label_is_refused_at_its_line(tmp_path):
    root = write_repo(tmp_path / "repo", {"keyed": (
        "name: keyed\nextends: base\nevaluation:\n  join: {movies: [liked]}\n"
        "datasets:\n  movies:\n    columns:\n      liked: {dtype: bool}\n")})
    code, _, err = invoke_cli(["show", "keyed"], root)
    assert code == 2, err
    assert "environments/keyed.yaml:4:" in err and "error[BE020]: evaluation.join.movies: key " \
        "column 'liked' is the label, which serving never sends" in err, err


def test_slices_see_the_columns_of_the_datasets_joined_only():
    """A slice column of a dataset that shares only the label's name is not on the evaluation
    rows (nothing joins it): slice_columns leaves it out, so the slice is BE501 up front."""
    shares_label = environment({"late": {"dtype": "bool"}, "city": {"dtype": "string"}})
    assert "city" not in slice_columns(shares_label)
    shares_carrier = environment({"carrier": {"dtype": "string"}, "city": {"dtype": "string"}})
    assert slice_columns(shares_carrier)["city"][0] == "sales"
