"""A Feast feature repository for the importer's tests: two entities, an online and an
offline feature view over one Parquet source, and a feature service taking part of each.
`feast_churn.json` is what `feast_registry.py` said of it under Feast 0.67 (the slow test
checks that it still does)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RECORDED = Path(__file__).with_name("feast_churn.json")

FEATURE_STORE = """\
project: churn
registry: data/registry.db
provider: local
offline_store: {type: file}
online_store: {type: sqlite, path: data/online_store.db}
entity_key_serialization_version: 3
"""

FEATURES = '''\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
plan = Entity(name="plan", join_keys=["plan_id"], value_type=ValueType.STRING)
events = FileSource(name="events", path="data/events.parquet",
                    timestamp_field="event_timestamp")

customer_stats = FeatureView(
    name="customer_stats", entities=[customer], ttl=timedelta(days=30), online=True,
    schema=[Field(name="tenure", dtype=Float64), Field(name="spend", dtype=Float32),
            Field(name="plan_name", dtype=String), Field(name="recent_scores",
                                                         dtype=Array(Float64)),
            Field(name="active", dtype=Bool)],
    source=events)
customer_history = FeatureView(
    name="customer_history", entities=[customer, plan], ttl=timedelta(days=365),
    online=False, schema=[Field(name="n_orders", dtype=Int64),
                          Field(name="tags", dtype=Array(String))],
    source=events)
churn_v1 = FeatureService(name="churn_v1", features=[
    customer_stats[["tenure", "spend", "recent_scores"]], customer_history])
'''


def write_feast_repo(root: Path) -> Path:
    """The repository's files (not applied: `feast apply` writes the registry)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(FEATURE_STORE)
    (root / "features.py").write_text(FEATURES)
    (root / "data").mkdir(exist_ok=True)
    n = 12
    pq.write_table(pa.table({
        "customer_id": pa.array(range(n), pa.int64()),
        "plan_id": pa.array(["basic", "pro"] * (n // 2)),
        "event_timestamp": pa.array([dt.datetime(2026, 9, 1, tzinfo=dt.UTC)] * n,
                                    pa.timestamp("us", tz="UTC")),
        "tenure": pa.array([float(i) for i in range(n)]),
        "spend": pa.array([float(i) / 2 for i in range(n)], pa.float32()),
        "plan_name": pa.array(["basic", "pro"] * (n // 2)),
        "recent_scores": pa.array([[0.5, 1.0]] * n),
        "active": pa.array([i % 2 == 0 for i in range(n)]),
        "n_orders": pa.array(range(n), pa.int64()),
        "tags": pa.array([["a"]] * n),
    }), root / "data" / "events.parquet")
    return root


def recorded() -> dict:
    return json.loads(RECORDED.read_text())
