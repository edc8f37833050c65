"""Describe one feature service of a Feast repository as JSON, through Feast's own API.

Run by Feast's interpreter, not buildenv's (Feast needs pandas < 3, which buildenv's pins
exclude), so this file imports nothing from buildenv:

    <feast python> feast_registry.py REPO SERVICE

It reads the registry `feast apply` wrote and never touches the online or offline stores.
Output: `{"project", "feast", "services": [every service's name], "service": {...} | null}`;
the service lists its views with their online flag, the features it selects, every feature
of the view, the entities' join keys and the batch source.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["describe"]


def _type(dtype: Any) -> str:
    return str(dtype)


def describe(repo: str, service_name: str) -> dict[str, Any]:
    # Feast's own interpreter runs this file: Feast is there, not in buildenv's environment
    import feast  # pants: no-infer-dep
    from feast import FeatureStore  # pants: no-infer-dep

    store = FeatureStore(repo_path=repo)
    services = {s.name: s for s in store.list_feature_services()}
    out: dict[str, Any] = {"project": store.project, "feast": feast.__version__,
                 "services": sorted(services), "service": None}
    service = services.get(service_name)
    if service is None:
        return out
    views = {v.name: v for v in store.list_all_feature_views()}
    views.update({v.name: v for v in store.list_on_demand_feature_views()})
    entities = {e.name: e for e in store.list_entities()}
    described = []
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        source = getattr(view, "batch_source", None)
        described.append({
            "name": projection.name,
            "alias": projection.name_alias,
            "kind": type(view).__name__ if view is not None else "unknown",
            "online": bool(getattr(view, "online", False)),
            "features": [{"name": f.name, "type": _type(f.dtype)} for f in projection.features],
            "all_features": [{"name": f.name, "type": _type(f.dtype)}
                             for f in getattr(view, "features", [])],
            "entities": [{"name": name, "join_key": entities[name].join_key,
                          "type": entities[name].value_type.name}
                         for name in getattr(view, "entities", []) if name in entities],
            "join_key_map": dict(projection.join_key_map or {}),
            "source": None if source is None else {
                "type": type(source).__name__, "path": getattr(source, "path", None),
                "timestamp_field": getattr(source, "timestamp_field", None) or None},
        })
    out["service"] = {"name": service.name, "views": described}
    return out


if __name__ == "__main__":
    print(json.dumps(describe(sys.argv[1], sys.argv[2]), sort_keys=True))
