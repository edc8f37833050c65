"""`buildenv skew` (and `drift --serving`): the locked training data against serving data, per
served column, with `monitoring.skew`'s thresholds; `--key` joins the two and counts differing
values; a rare value of a restricted dataset never reaches any output (issue #27)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import invoke_cli, write_parquet, write_repo

SENTINEL = "ZZSKEWSENTINEL"
N = 3000

STORE = """\
name: store
datasets:
  products:
    uri: data/products.parquet
    columns:
      sku: {dtype: int64, nullable: false, unique: true}
      category: {dtype: string, domain: [toys, books, games]}
      weight: {dtype: float64}
      margin: {dtype: float64, serving: false}
      tag: {dtype: string, required: false}
  shoppers:
    uri: data/shoppers.parquet
    columns:
      shopper_id: {dtype: int64, nullable: false}
      country: {dtype: string}
      age: {dtype: float64}
monitoring:
  drift:
    categorical: {linf: 0.5}
    numeric: {psi: 5}
  skew:
    columns:
      category: {linf: 0.05}
privacy:
  restricted: [shoppers]
  min_group_size: 10
"""


def products(seed: int, shares=(0.5, 0.3, 0.2), weight_shift=0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "sku": pa.array(np.arange(N), pa.int64()),
        "category": pa.array(np.array(["toys", "books", "games"])[
            rng.choice(3, N, p=shares)].tolist()),
        "weight": pa.array(rng.normal(10 + weight_shift, 2, N)),
        "margin": pa.array(rng.random(N))})


def shoppers(seed: int, sentinel: bool = False, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    country = np.array(["US", "DE", "FR"])[rng.choice(3, N, p=(0.6, 0.3, 0.1))].astype(object)
    if sentinel:
        country[:3] = SENTINEL
    return pa.table({"shopper_id": pa.array(np.arange(N), pa.int64()),
                     "country": pa.array(country.tolist()),
                     "age": pa.array(rng.normal(40 + shift, 10, N))})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    repo = write_repo(tmp_path / "repo", envs={"store": STORE})
    write_parquet(repo / "data" / "products.parquet", products(1))
    write_parquet(repo / "data" / "shoppers.parquet", shoppers(2))
    assert invoke_cli(["lock", "store"], repo)[0] == 0
    return repo


def skew(repo: Path, dataset: str, serving: str, *args: str) -> tuple[int, dict, str]:
    code, out, err = invoke_cli(["skew", "store", "--dataset", dataset, "--serving", serving,
                                 "--format", "json", *args], repo)
    assert code in (0, 1), (out, err)
    return code, json.loads(out), err


def serve(repo: Path, name: str, table: pa.Table) -> str:
    write_parquet(repo / name, table)
    return name


def test_unskewed_serving_data_passes(store):
    name = serve(store, "s.parquet", products(11).drop_columns(["margin"]))
    code, report, _ = skew(store, "products", name)
    assert code == 0 and report["alerts"] == [] and report["comparison"] == "skew"
    stats = json.loads((store / report["statistics"]).read_text())
    assert report["statistics"].startswith(".buildenv/skew/store/products-")
    assert set(stats["columns"]) == {"category", "weight"}  # served, monitored, not a key
    assert stats["not_monitored"] == {"sku": "unique (a key)", "margin": "training-only"}
    assert stats["comparison"] == {"kind": "skew", "baseline": "training",
                                   "candidate": "serving"}


def test_skew_thresholds_come_from_monitoring_skew(store):
    name = serve(store, "s.parquet", products(12, shares=(0.4, 0.35, 0.25), weight_shift=1.5)
                 .drop_columns(["margin"]))
    code, report, _ = skew(store, "products", name)
    assert code == 1
    alerts = {(a["code"], a["column"], a["statistic"]): a for a in report["alerts"]}
    assert set(alerts) == {("BE611", "category", "linf"), ("BE612", "weight", "psi")}
    cat = alerts[("BE611", "category", "linf")]
    assert cat["threshold"] == 0.05 and cat["threshold_key"] == "monitoring.skew.columns.category.linf"
    assert cat["location"] == "environments/store.yaml:23:18"
    weight = alerts[("BE612", "weight", "psi")]
    assert weight["threshold"] == 0.2 and weight["threshold_key"] is None  # skew's default
    assert "set monitoring.skew.columns.weight.psi to" in weight["hints"][1]
    # the same data as a drift candidate is judged by drift's (looser) thresholds
    code, out, _ = invoke_cli(["drift", "store", "--dataset", "products", "--serving", name,
                               "--format", "json"], store)
    assert (code, json.loads(out)["alerts"]) == (0, [])


def test_served_columns_missing_and_training_only_present(store):
    table = products(13).drop_columns(["weight"])  # margin (training-only) still there
    code, report, _ = skew(store, "products", serve(store, "s.parquet", table))
    assert code == 1
    assert [(d["code"], d["message"].split(":")[0]) for d in report["diagnostics"]] == [
        ("BE212", "products.weight"), ("BE211", "products.margin")]
    # an optional column that is absent is no problem; a present one is compared
    assert "tag" not in json.dumps(report["diagnostics"])


def test_key_joins_serving_rows_to_training_rows(store):
    table = products(1).drop_columns(["margin"])  # the training rows themselves ...
    category = np.array(table.column("category").to_pylist(), dtype=object)
    category[:150] = np.where(category[:150] == "toys", "books", "toys")  # ... 150 recomputed
    weight = table.column("weight").to_numpy().copy()
    weight[150:160] *= 1.0000001  # within the float tolerance (1e-6 relative)
    table = table.set_column(1, "category", pa.array(category.tolist()))
    table = table.set_column(2, "weight", pa.array(weight))
    table = pa.concat_tables([table, pa.table({  # and rows whose key training lacks
        "sku": pa.array([10**9, 10**9 + 1], pa.int64()), "category": ["toys", "toys"],
        "weight": [1.0, 1.0]})])
    code, report, _ = skew(store, "products", serve(store, "s.parquet", table), "--key", "sku")
    mismatch = [a for a in report["alerts"] if a["code"] == "BE615"]
    assert [(a["column"], round(a["value"], 6)) for a in mismatch] == [
        ("category", round(150 / N, 6))]
    assert "150 of 3,000 serving rows joined on sku (5.0%)" in mismatch[0]["message"]
    assert "e.g. sku 0:" in mismatch[0]["message"]
    stats = json.loads((store / report["statistics"]).read_text())
    assert stats["join"] == {"key": ["sku"], "serving_rows": N + 2, "joined": N,
                             "rtol": 1e-6}
    assert stats["columns"]["weight"]["mismatch"] == {"joined": N, "differ": 0,
                                                      "fraction": 0.0}


def test_a_key_nothing_joins_on_is_a_warning(store):
    table = products(1).drop_columns(["margin"])
    table = table.set_column(0, "sku", pa.array(np.arange(N) + 10**6, pa.int64()))
    code, report, _ = skew(store, "products", serve(store, "s.parquet", table), "--key", "sku")
    assert code == 0
    [problem] = report["diagnostics"]
    assert problem["code"] == "BE616" and problem["severity"] == "warning"


def test_restricted_dataset_never_shows_a_rare_value(store):
    name = serve(store, "s.parquet", shoppers(5, sentinel=True, shift=8))
    code, out, err = invoke_cli(["skew", "store", "--dataset", "shoppers", "--serving", name,
                                 "--key", "shopper_id", "--html", "report.html"], store)
    assert code == 1, out + err
    assert "BE615" in out and "BE612" in out
    text = out + err + (store / "report.html").read_text()
    for path in (store / ".buildenv").rglob("*.json"):
        text += path.read_text()
    assert SENTINEL not in text
    assert "e.g." not in next(line for line in out.splitlines() if "BE615" in line)


def test_usage_errors(store):
    code, out, err = invoke_cli(["skew", "store", "--dataset", "nope", "--serving", "x.parquet"],
                                store)
    assert code == 2 and "BE009" in err
    code, out, err = invoke_cli(["skew", "store", "--dataset", "products", "--serving",
                                 "missing.parquet"], store)
    assert code == 2 and "BE053" in err
    serve(store, "s.parquet", products(3))
    code, out, err = invoke_cli(["skew", "store", "--dataset", "products", "--serving",
                                 "s.parquet", "--key", "skuu"], store)
    assert code == 2 and "error[BE010]: --key: dataset 'products' declares no column 'skuu'" in err
    code, out, err = invoke_cli(["drift", "store", "--dataset", "products", "--serving",
                                 "s.parquet", "--against", "s.parquet"], store)
    assert code == 2 and "BE004" in err
