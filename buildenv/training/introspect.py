"""What a fitted model is made of: its input columns and every operation in its graph.

Runs inside the training process (it needs the live object). Walks
Pipelines, ColumnTransformers, FeatureUnions, meta-estimators and nested
params, preferring the *fitted* sub-estimators (`transformers_`,
`estimators_`, `best_estimator_`, ...) since those are what production runs.
Class paths are reported by their public import path
(`sklearn.linear_model.LogisticRegression`, not `..._logistic.LogisticRegression`)
because that is what users write in `serving.ops`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

__all__ = ["foreign_parts", "model_inputs", "public_path", "walk", "walk_ops"]

_PARAM_SKIP = ("memory", "verbose", "n_jobs", "random_state")


def public_path(obj: Any) -> str:
    """The shortest module path that exports the class (what users import it from)."""
    cls = type(obj)
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        if any(p.startswith("_") for p in parts[1:i]):
            break
        name = ".".join(parts[:i])
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{name}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and (hasattr(value, "fit") or hasattr(value, "transform"))


def _children(est: Any) -> Iterator[tuple[str, Any]]:
    """(label, child) pairs: the components a user composed, fitted where that matters.

    We follow estimator-valued constructor params (Pipeline steps, a meta-estimator's
    `estimator`, Voting/Stacking `estimators`, ...) and a fitted ColumnTransformer's
    `transformers_` / a search's `best_estimator_`. We do not descend into an ensemble's
    internal clones (a RandomForest's trees): those are the class's implementation, and a
    serving stack that runs the ensemble runs them.
    """
    seen: set[int] = set()
    fitted_transformers = getattr(est, "transformers_", None)
    if fitted_transformers is not None:
        for label, child in _unpack("transformers_", fitted_transformers):
            if _is_estimator(child) and id(child) not in seen:
                seen.add(id(child))
                yield label, child
    best = getattr(est, "best_estimator_", None)
    if best is not None and _is_estimator(best):
        seen.add(id(best))
        yield "best_estimator_", best
    try:
        params = est.get_params(deep=False)
    except Exception:
        return
    for name, value in sorted(params.items()):
        if name in _PARAM_SKIP or (name == "transformers" and fitted_transformers is not None):
            continue
        for label, child in _unpack(name, value):
            if _is_estimator(child) and id(child) not in seen:
                seen.add(id(child))
                yield label, child


def _unpack(attr: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) or (hasattr(value, "items") and not _is_estimator(value)):
        try:
            for key, child in value.items():
                yield f"{attr}[{key}]", child
            return
        except Exception:
            pass
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[0], str):
                yield f"{attr}[{item[0]}]", item[1]
            else:
                yield f"{attr}[{i}]", item
        return
    yield attr, value


def walk(model: Any) -> list[tuple[Any, str]]:
    """Every estimator/transformer in the model, once, with where it sits."""
    out: list[tuple[Any, str]] = []
    seen: set[int] = set()

    def visit(est: Any, where: str) -> None:
        if id(est) in seen:
            return
        seen.add(id(est))
        out.append((est, where))
        for label, child in _children(est):
            visit(child, f"{where} > {label}: {type(child).__name__}")

    visit(model, type(model).__name__)
    return out


def walk_ops(model: Any) -> list[dict]:
    """Every estimator/transformer in the model: class path and where it sits."""
    return [{"class": public_path(est), "where": where} for est, where in walk(model)]


_FOREIGN = (("torch.nn.modules.module", "Module", "a PyTorch module"),
            ("torch", "Tensor", "a PyTorch tensor"),
            ("keras", "Model", "a Keras model"), ("tensorflow", "Module", "a TensorFlow module"))


def foreign_parts(model: Any) -> list[tuple[str, str]]:
    """(where, what) for each attribute of a walked estimator that holds a neural-network
    framework object: a wrapper class records only itself as an operation, and its framework
    part is then never verified (and cannot be loaded without the repository's code)."""
    found = []
    for est, where in walk(model):
        for attr, value in sorted(getattr(est, "__dict__", {}).items()):
            for cls in type(value).__mro__:
                hit = next((what for module, name, what in _FOREIGN
                            if cls.__name__ == name and cls.__module__.split(".")[0] ==
                            module.split(".")[0] and cls.__module__.startswith(module)), None)
                if hit:
                    found.append((f"{where}.{attr}", hit))
                    break
    return found


def model_inputs(model: Any) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    return [str(n) for n in names]
