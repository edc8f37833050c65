"""`buildenv import feast`: which features production serves, from Feast's registry.

The feature store already says which features are served online: a feature service selects
features of feature views, and a view is materialised to the online store only when it is
`online`. This importer turns one service into environment datasets -- one per view, at the
view's batch source -- so that `serving: false` is no longer retyped by hand:

- features the service takes from an online view are served; features it takes from an
  offline view, and the view's features the service does not select, are training-only
  (`serving: false`), so a build refuses a model that needs one (BE401);
- entities' join keys are the keys (`nullable: false`, not drift-monitored); the source's
  event timestamp is a training-only `timestamp` column;
- Feast types map to dtypes (Int64 -> int64, Float32 -> float32, String -> string,
  UnixTimestamp -> timestamp, ...); lists, maps, bytes and on-demand views have no
  equivalent and are listed with BE908, as the GX and TFDV importers list theirs.

Feast runs in its own interpreter (`feast_python.feast_python`), describing the registry
with `feast_registry.py`; what it says is cached by the registry's digest, because starting
Feast costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import did_you_mean
from buildenv.core.project import Project
from buildenv.env.importers.feast_python import FeastError, feast_python

__all__ = ["FeastError", "FeastImport", "cache_path", "describe_service", "environment_text",
           "translate"]

SCRIPT = Path(__file__).with_name("feast_registry.py")
TIMEOUT = 600.0
DTYPES = {"Int32": "int32", "Int64": "int64", "Float32": "float32", "Float64": "float64",
          "String": "string", "Bool": "bool", "UnixTimestamp": "timestamp",
          "INT32": "int32", "INT64": "int64", "FLOAT": "float32", "DOUBLE": "float64",
          "STRING": "string", "BOOL": "bool", "UNIX_TIMESTAMP": "timestamp"}


@dataclass
class FeastImport:
    """The datasets of one feature service, and what could not be translated."""

    service: str
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _registry(repo: Path) -> Path | None:
    """The local registry file `feature_store.yaml` names (None: a remote registry)."""
    config = repo / "feature_store.yaml"
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeastError("BE906", f"'{repo}' is not a Feast repository (no "
                         "feature_store.yaml)") from None
    except (OSError, yaml.YAMLError) as exc:
        raise FeastError("BE906", f"cannot read '{config}': {exc}") from None
    registry = (data or {}).get("registry", "data/registry.db")
    if isinstance(registry, dict):
        registry = registry.get("path")
    if not isinstance(registry, str) or "://" in registry:
        return None
    path = (repo / registry) if not os.path.isabs(registry) else Path(registry)
    if not path.is_file():
        raise FeastError("BE906", f"Feast repository '{repo}' has no registry ({registry}): "
                         "it was never applied", "run `feast apply` in it first")
    return path


def cache_path(project: Project, repo: Path, service: str) -> Path | None:
    """Where Feast's description of `service` is cached: keyed by the registry's bytes (and
    this importer's script); None for a remote registry, which is asked every time."""
    registry = _registry(repo)
    if registry is None:
        return None
    hasher = hashlib.sha256(registry.read_bytes())
    hasher.update(SCRIPT.read_bytes())
    hasher.update(f"\0{repo.resolve()}\0{service}".encode())
    return project.state_dir / "cache" / "feast" / f"{hasher.hexdigest()}.json"


def describe_service(project: Project, repo: Path, service: str) -> dict[str, Any]:
    """What Feast says of `service` (feast_registry.py's JSON), cached by registry digest."""
    key = cache_path(project, repo, service)
    if key is not None:
        try:
            cached: dict[str, Any] = json.loads(key.read_text())
            return cached
        except (OSError, ValueError):
            pass
    python = feast_python(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["FEAST_USAGE"] = "False"  # no usage telemetry
    try:
        proc = subprocess.run([python, str(SCRIPT), str(repo.resolve()), service],
                              capture_output=True, text=True, timeout=TIMEOUT, env=env,
                              cwd=repo)
    except subprocess.TimeoutExpired:
        raise FeastError("BE909", f"Feast did not describe '{repo}' within {TIMEOUT:g} s") \
            from None
    except OSError as exc:
        raise FeastError("BE909", f"cannot run Feast's interpreter '{python}': "
                         f"{exc.strerror or exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FeastError("BE909", f"Feast failed on '{repo}': {last}")
    try:
        described: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise FeastError("BE909", "Feast's description is not JSON") from None
    if key is not None and described.get("service") is not None:
        atomic_write_text(key, json.dumps(described, sort_keys=True))
    return described


def translate(described: dict[str, Any], service: str, repo: Path, project: Project) -> FeastImport:
    """Environment datasets for `service` (FeastError BE907 when the registry lacks it)."""
    if described.get("service") is None:
        known = ", ".join(described.get("services") or []) or "none"
        raise FeastError("BE907", f"Feast repository '{repo}' has no feature service "
                         f"'{service}' (services: {known})",
                         did_you_mean(service, described.get("services") or []) or "")
    out = FeastImport(service)
    for view in described["service"]["views"]:
        name = view.get("alias") or view["name"]
        source = view.get("source") or {}
        if view.get("kind") == "OnDemandFeatureView" or not source.get("path"):
            out.skipped.append(f"feature view '{view['name']}' ({view.get('kind')}): no file "
                               "source to read: computed at request time or from a stream")
            continue
        out.datasets[name] = _dataset(view, service, repo, project, out.skipped)
    return out


def _dataset(view: dict[str, Any], service: str, repo: Path, project: Project,
             skipped: list[str]) -> dict[str, Any]:
    source = view["source"]
    path = str(source["path"])
    uri = path if "://" in path else _relative(repo / path, project)
    columns: dict[str, dict[str, Any]] = {}
    join_keys = view.get("join_key_map") or {}
    for entity in view.get("entities", []):
        key = join_keys.get(entity["join_key"], entity["join_key"])
        dtype = DTYPES.get(entity["type"])
        if dtype is None:
            skipped.append(f"entity '{entity['name']}' of view '{view['name']}': join key "
                           f"'{key}' is {entity['type']}, which has no dtype")
            continue
        columns[key] = {"dtype": dtype, "nullable": False, "monitor": False,
                        "description": f"Feast entity '{entity['name']}' (join key)"}
    selected = {f["name"] for f in view.get("features", [])}
    for feature in view.get("all_features") or view.get("features", []):
        dtype = DTYPES.get(feature["type"])
        if dtype is None:
            skipped.append(f"feature '{view['name']}:{feature['name']}' is {feature['type']}: "
                           "lists, maps and bytes have no dtype")
            continue
        column: dict[str, Any] = {"dtype": dtype}
        if feature["name"] not in selected:
            column["serving"] = False
            column["description"] = f"not in feature service '{service}'"
        elif not view.get("online"):
            column["serving"] = False
            column["description"] = f"offline feature view '{view['name']}': not served online"
        columns[feature["name"]] = column
    timestamp = source.get("timestamp_field")
    if timestamp and timestamp not in columns:
        columns[timestamp] = {"dtype": "timestamp", "serving": False, "monitor": False,
                              "description": "event time of the batch source"}
    fmt = "csv" if path.lower().endswith(".csv") else "parquet"
    data: dict[str, Any] = {"uri": uri}
    if fmt != "parquet":
        data["format"] = fmt
    data["description"] = (f"Feast feature view '{view['name']}' "
                           f"({'online' if view.get('online') else 'offline'})")
    data["columns"] = columns
    return data


def _relative(path: Path, project: Project) -> str:
    try:
        return path.resolve().relative_to(project.data_base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def environment_text(imported: FeastImport, env: str | None, existing: dict[str, Any] | None,
                     header: str) -> str:
    """The environment's YAML: new, or `existing` with the service's datasets merged in
    (declared columns keep their constraints; `serving` follows Feast; new columns added)."""
    doc: dict[str, Any] = dict(existing) if existing else {"name": env or "feast"}
    datasets = dict(doc.get("datasets") or {})
    for name, dataset in imported.datasets.items():
        if name not in datasets:
            datasets[name] = dataset
            continue
        merged = dict(datasets[name])
        columns = dict(merged.get("columns") or {})
        for column, declared in dataset["columns"].items():
            if column in columns:
                current = dict(columns[column])
                current.pop("serving", None)
                if declared.get("serving") is False:
                    current["serving"] = False
                columns[column] = current
            else:
                columns[column] = declared
        merged["columns"] = columns
        datasets[name] = merged
    doc["datasets"] = datasets
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return f"# {header}\n{body}"
