"""`buildenv validate ENV --serving URI`: serving data against the served columns (issue #27).

Training-only columns and the label present are BE211, served columns missing BE212 (an error
when a built model takes the column, or no model is known; a warning otherwise), undeclared
columns BE213 by the strictest `undeclared_columns`, values judged with the same rules and
diagnostics as training data; Parquet, CSV and JSON lines; restricted datasets: no value ever,
and the read is audited.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import invoke_cli, write_parquet, write_repo

SENTINEL = "QZSERVING27"

SHOP = """\
name: shop
datasets:
  items:
    uri: data/items.parquet
    columns:
      item_id: {dtype: int64, nullable: false}
      color: {dtype: string, domain: [red, blue]}
      price: {dtype: float64, range: [0, 100], allow_nan: false}
      cost: {dtype: float64, serving: false}
      promo: {dtype: string, required: false}
  buyers:
    uri: data/buyers.parquet
    columns:
      buyer_id: {dtype: int64, nullable: false}
      region: {dtype: string, domain: [north, south]}
      spent: {dtype: float64}
      bought: {dtype: bool}
label: {dataset: buyers, column: bought}
privacy:
  restricted: [buyers]
"""


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    repo = write_repo(tmp_path / "repo", envs={"shop": SHOP})
    write_parquet(repo / "data" / "items.parquet", pa.table({
        "item_id": [1, 2], "color": ["red", "blue"], "price": [1.0, 2.0], "cost": [0.5, 1.0],
        "promo": ["x", None]}))
    write_parquet(repo / "data" / "buyers.parquet", pa.table({
        "buyer_id": [1, 2], "region": ["north", "south"], "spent": [1.0, 2.0],
        "bought": [True, False]}))
    return repo


def check(repo: Path, uri: str, *args: str) -> tuple[int, list[str]]:
    code, out, err = invoke_cli(["validate", "shop", "--serving", uri, *args], repo)
    return code, err.splitlines() + out.splitlines()


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path.name


CLEAN = [{"item_id": 1, "color": "red", "price": 3, "buyer_id": 7, "region": "north",
          "spent": 1.5}, {"item_id": 2, "color": None, "price": 2.5, "buyer_id": 8,
                          "region": "south", "spent": 0}]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "csv"])
def test_clean_serving_data_passes_in_every_format(shop, suffix):
    if suffix == "jsonl":
        name = jsonl(shop / "serving.jsonl", CLEAN)
    else:
        table = pa.Table.from_pylist(CLEAN, schema=pa.schema([
            ("item_id", pa.int64()), ("color", pa.string()), ("price", pa.float64()),
            ("buyer_id", pa.int64()), ("region", pa.string()), ("spent", pa.float64())]))
        name = f"serving.{suffix}"
        if suffix == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, shop / name)
        else:
            write_parquet(shop / name, table)
    assert check(shop, name) == (0, ["shop: serving data valid (2 rows, 6 served column(s) "
                                     "checked)"])


def test_training_only_columns_label_missing_and_undeclared(shop):
    rows = [{**row, "cost": 1.0, "bought": True, "session": "s1"} for row in CLEAN]
    for row in rows:
        del row["spent"]
    code, lines = check(shop, jsonl(shop / "s.jsonl", rows))
    assert code == 1
    found = [line for line in lines if not line.startswith("  hint")]
    assert found == [
        "environments/shop.yaml:9:30: error[BE211]: items.cost: training-only (serving: "
        "false), but the serving data (s.jsonl) has it",
        "environments/shop.yaml:16:7: error[BE212]: buyers.spent: served, but the serving data "
        "(s.jsonl) has no such column",
        "environments/shop.yaml:18:26: error[BE211]: buyers.bought: training-only (the label), "
        "but the serving data (s.jsonl) has it"]
    # undeclared columns: by the strictest setting of the datasets checked
    path = shop / "environments" / "shop.yaml"
    path.write_text(path.read_text().replace("  buyers:\n    uri: data/buyers.parquet\n",
                                             "  buyers:\n    uri: data/buyers.parquet\n"
                                             "    undeclared_columns: warn\n"))
    code, lines = check(shop, "s.jsonl", "--dataset", "items")
    assert code == 1 and not any("BE213" in line for line in lines)  # items ignores them
    code, lines = check(shop, "s.jsonl")
    assert any(line.endswith("warning[BE213]: serving data (s.jsonl): 1 column(s) no dataset "
                             "of shop declares: session") for line in lines)


def test_values_are_judged_as_in_training_data(shop):
    rows = [dict(CLEAN[0], color="green", price=float("nan")), dict(CLEAN[1], price=500)]
    text = "".join(json.dumps(r) + "\n" for r in rows)  # NaN as JSON allows it
    (shop / "s.jsonl").write_text(text)
    code, lines = check(shop, "s.jsonl", "--dataset", "items")
    assert code == 1
    assert [line.split(": ", 2)[1] for line in lines if not line.startswith("  ")] == [
        "error[BE204]", "error[BE205]", "error[BE215]"]
    assert "items.color (serving data): 1 of 1 non-null values (fraction 1) are outside the " \
        "domain ('green': 1)" in "\n".join(lines)


def test_a_wrong_json_type_names_the_column(shop):
    rows = [dict(CLEAN[0], item_id="one")]
    code, lines = check(shop, jsonl(shop / "s.jsonl", rows), "--dataset", "items")
    assert (code, lines) == (1, [
        "environments/shop.yaml:4:5: error[BE201]: dataset 'items', column 'item_id': a JSON "
        "string where the column's dtype needs a number"])


def test_missing_served_columns_are_errors_only_for_model_inputs(shop):
    rows = [{k: v for k, v in row.items() if k not in ("price", "spent")} for row in CLEAN]
    name = jsonl(shop / "s.jsonl", rows)
    lineage = shop / "dist" / "model" / "shop" / "buildenv.json"
    lineage.parent.mkdir(parents=True)
    lineage.write_text(json.dumps({"training": "model", "environment": "shop",
                                   "inputs": ["color", "price", "region"]}))
    code, lines = check(shop, name)
    assert code == 1
    assert [line.split(": ", 1)[1] for line in lines if "BE212" in line] == [
        "error[BE212]: items.price: served, but the serving data (s.jsonl) has no such column; "
        "model@shop takes it as input",
        "warning[BE212]: buyers.spent: served, but the serving data (s.jsonl) has no such "
        "column; no model built against shop takes it as input"]


def test_restricted_serving_data_shows_no_value_and_is_audited(shop):
    rows = [dict(CLEAN[0], region=SENTINEL), dict(CLEAN[1], region="north")]
    code, out, err = invoke_cli(["validate", "shop", "--serving",
                                 jsonl(shop / "s.jsonl", rows), "--format", "json"], shop)
    assert code == 1
    [found] = json.loads(out)["diagnostics"]
    assert found["code"] == "BE204" and "restricted dataset: values not shown" in \
        found["message"]
    assert SENTINEL not in out + err
    for state in (shop / ".buildenv").rglob("*"):
        if state.is_file():
            assert SENTINEL.encode() not in state.read_bytes(), state
    code, out, _ = invoke_cli(["audit", "shop", "--format", "json"], shop)
    [record] = json.loads(out)["records"]
    assert (record["purpose"], record["dataset"], record["rows"]) == (
        "validate --serving", "buyers", 2)
    # a decoding error of restricted serving data quotes no value either
    (shop / "bad.jsonl").write_text(json.dumps(dict(CLEAN[0], spent=SENTINEL)) + "\n")
    code, out, err = invoke_cli(["validate", "shop", "--serving", "bad.jsonl"], shop)
    assert code == 1 and "BE201" in err and SENTINEL not in out + err


def test_usage_errors(shop):
    assert check(shop, "nope.jsonl")[0] == 2
    code, lines = check(shop, "nope.jsonl")
    assert lines == ["buildenv: error[BE053]: --serving: 'nope.jsonl' not found"]
    code, lines = check(shop, "s.jsonl", "--dataset", "nope")
    assert code == 2 and "BE009" in lines[0]
