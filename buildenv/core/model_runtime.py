"""How a served model answers, for every artifact format: one implementation that the build
(parity, importance and latency in the serving runtime), promotion and the serving image's app
all run, so that what was measured is what serves.

Standard library only at import time: `buildenv image` copies this file next to the app, where
nothing else of buildenv is installed. Each format imports its own runtime when a model is
loaded: onnxruntime and numpy for `onnx`, skops and scikit-learn for `skops`, the pickle
module (and whatever the pickle names) for `pickle`.

A model is described by its *descriptor*, written into the artifact's `MLmodel` (metadata
`buildenv`, a hashed file) when it is built: the format, the model file, the input columns,
the task and the label classes in the order of the probability columns. Classes are the
environment's label values: a model that predicts integer codes (an XGBoost classifier fitted
on encoded labels) is answered through `classes` (code `i` is `classes[i]`).

Trust never comes from the artifact: a skops file may hold only skops' own safe types and the
types the *environment's* `serving.ops` allow (`trusted_patterns`), and a pickle is loaded
only when the caller says pickles are acceptable. Callers check the artifact's digest
(`artifact_digest`) before calling `load`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import io
import json
import os
import pickle
import sys
import types
import zipfile
from typing import Any

# Deferred imports (numpy, pandas, onnxruntime, skops): this file runs in serving images where
# only the model's own runtime is installed (numpy and onnxruntime for an ONNX graph; pandas,
# skops and scikit-learn for a skops file), so each is imported where a format needs it.

__all__ = ["BASE_TRUSTED", "COMPANION_TYPES", "EstimatorModel", "ModelLoadError", "OnnxModel", "ServedModel",
           "SkopsTree", "UNHASHED", "artifact_digest", "import_skops", "load", "skops_tree",
           "trusted_patterns", "untrusted_types"]

UNHASHED = ("buildenv.json", "buildenv.sig")  # written after the digest (lineage, signature)

#: Types every skops file may hold beyond skops' own: a dtype is rebuilt from its name and runs
#: no code (SimpleImputer keeps one).
BASE_TRUSTED = ("numpy.dtype",)

#: Types a fitted model of an allowed class holds besides the class itself: allowing the
#: class in `serving.ops` trusts them in a skops file too.
COMPANION_TYPES: dict[str, tuple[str, ...]] = {
    "sklearn.tree.*": ("sklearn.tree._tree.Tree",),
    "sklearn.ensemble.*": ("sklearn.tree._tree.Tree",),
    "sklearn.ensemble.HistGradientBoosting*": (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # categorical_features: the fitted binner keeps a partial of check_array
        "functools.partial", "sklearn.utils.validation.check_array"),
    "xgboost.XGB*": ("xgboost.core.Booster", "xgboost.sklearn.XGB*"),
    "xgboost.sklearn.XGB*": ("xgboost.core.Booster",),
    "lightgbm.LGBM*": ("lightgbm.basic.Booster", "lightgbm.sklearn.LGBM*",
                       "collections.OrderedDict"),
    "lightgbm.sklearn.LGBM*": ("lightgbm.basic.Booster", "collections.OrderedDict"),
}


class ModelLoadError(Exception):
    """The model cannot be loaded as described; the message names the cause, never data."""


def artifact_digest(directory: str, exclude: tuple[str, ...] = UNHASHED) -> str:
    """sha256 of the canonical JSON list of [relative path, sha256 of contents] of every file
    of `directory` but `exclude`, in path order: the artifact digest buildenv records."""
    found = []
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                rel = os.path.relpath(full, directory).replace(os.sep, "/")
                if rel not in exclude:
                    found.append(rel)
    entries = []
    for rel in sorted(found, key=lambda r: r.split("/")):
        h = hashlib.sha256()
        with open(os.path.join(directory, rel), "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
        entries.append([rel, h.hexdigest()])
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- trust for skops files ---------------------------------------------------------------------

def trusted_patterns(ops: list[str]) -> list[str]:
    """The type-name globs a skops file may hold under an environment's `serving.ops`: each
    allowed class by the path written there and by its defining module (`sklearn.linear_model.
    LogisticRegression` is `sklearn.linear_model._logistic.LogisticRegression` in the file),
    plus the companion types of allowed classes. Resolving a class imports the module the
    *environment* names, never one the artifact names."""
    out: list[str] = list(BASE_TRUSTED)
    for pattern in ops:
        out.append(pattern)
        if not any(ch in pattern for ch in "*?["):
            defining = _defining_path(pattern)
            if defining:
                out.append(defining)
        for owner, companions in COMPANION_TYPES.items():
            if fnmatch.fnmatchcase(pattern, owner) or pattern == owner:
                out.extend(companions)
    return list(dict.fromkeys(out))


def _defining_path(path: str) -> str | None:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception:  # not importable here: the glob itself still applies
        return None
    if not isinstance(obj, type):
        return None
    return f"{obj.__module__}.{obj.__qualname__}"


def import_skops() -> Any:
    """`skops.io`, imported without importing torch.

    skops builds its table of safe types by importing every scikit-learn module, and
    scikit-learn's array-API shim for torch imports torch (seconds, and nothing a skops file of
    a scikit-learn model can hold). While skops imports, that one shim module is a placeholder;
    it is removed afterwards, so a later import of the shim is the real one. Skipped when torch
    is already imported (the shim then costs nothing)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    shim = "sklearn.externals.array_api_compat.torch"
    placed = "torch" not in sys.modules and shim not in sys.modules
    if placed:
        sys.modules[shim] = types.ModuleType(shim)
    try:
        import skops.io
    finally:
        if placed and isinstance(sys.modules.get(shim), types.ModuleType) \
                and not hasattr(sys.modules[shim], "__file__"):
            del sys.modules[shim]
    return skops.io


def _refused(path: str, found: list[str], patterns: list[str]) -> None:
    refused = [t for t in found if not any(fnmatch.fnmatchcase(t, p) for p in patterns)]
    if refused:
        raise ModelLoadError(
            f"{os.path.basename(path)} holds type(s) the environment's serving.ops do not "
            f"allow: {', '.join(refused)}")


#: The skops whose `get_untrusted_types` and `load` `_skops_in_one_pass` repeats in one pass.
_SKOPS_ONE_PASS = "0.16.0"


class SkopsTree:
    """A skops file's bytes with skops' tree of their nodes (built once, with skops' defaults)
    and the types in it skops does not trust by itself. The build checks the types of the
    bytes it has just made before writing them; handing this to `load` lets the load back of
    the written file use that tree instead of building it again, once the file is found to
    hold exactly these bytes (a tree is constructed once: `take`)."""

    def __init__(self, data: bytes, tree: Any, untrusted: list[str]) -> None:
        self.data = data
        self.untrusted = untrusted
        self._tree = tree

    def take(self, path: str) -> Any:
        """The tree, if the file at `path` holds these bytes and it was not taken yet."""
        tree, self._tree = self._tree, None
        if tree is None:
            return None
        try:
            with open(path, "rb") as stream:
                same = stream.read() == self.data
        except OSError:
            return None
        return tree if same else None


def skops_tree(data: bytes) -> SkopsTree | None:
    """skops' tree of the skops bytes `data` and their untrusted types, or None with a skops
    other than the one `_skops_in_one_pass` repeats (then `get_untrusted_types(data=)` answers
    and `load` reads the file). Errors are skops' own."""
    parts = _skops_parts()
    if parts is None:
        return None
    read_schema, get_tree, _audit = parts
    with zipfile.ZipFile(io.BytesIO(data), "r") as source:
        schema, context = read_schema(source)
        tree = get_tree(schema, context, trusted=None)
    return SkopsTree(data, tree, sorted(tree.get_unsafe_set()))


def _skops_parts() -> tuple[Any, Any, Any] | None:
    """skops 0.16's `read_schema`, `get_tree` and `audit_tree`, or None (another skops)."""
    skops = sys.modules.get("skops")
    if skops is None or getattr(skops, "__version__", None) != _SKOPS_ONE_PASS:
        return None
    try:
        from skops.io._audit import audit_tree, get_tree
        from skops.io._utils import read_schema
    except ImportError:
        return None
    return read_schema, get_tree, audit_tree


def _skops_in_one_pass() -> Any:
    """`_load_skops` reading the file once, or None (another skops: its public calls).

    `get_untrusted_types(file=)` and `load(file, trusted=)` each open the zip, parse
    `schema.json` and build skops' tree of nodes (reading every array member) before one
    asks the tree for its untrusted types and the other audits and constructs it: for a
    boosted ensemble of hundreds of trees the first half is about a third of the load. Here
    the tree is built once with skops' defaults (or taken from a `SkopsTree` of the file's very
    bytes), its untrusted types are checked against the environment's patterns, and then it is
    audited with exactly those types trusted (what `load(trusted=untrusted_types(path))`
    audits) and constructed. Trust changes only what the audit says, never what a node
    constructs (skops 0.16)."""
    parts = _skops_parts()
    if parts is None:
        return None
    read_schema, get_tree, audit_tree = parts

    def load_once(path: str, patterns: list[str], known: SkopsTree | None = None) -> Any:
        name = os.path.basename(path)
        tree = known.take(path) if known is not None else None
        if tree is not None:
            assert known is not None
            found = known.untrusted
        else:
            try:
                source = zipfile.ZipFile(path, "r")
            except Exception as exc:
                raise ModelLoadError(f"{name} is not a readable skops file "
                                     f"({type(exc).__name__})") from None
            with source:
                try:
                    schema, context = read_schema(source)
                    tree = get_tree(schema, context, trusted=None)
                    found = sorted(tree.get_unsafe_set())
                except Exception as exc:
                    raise ModelLoadError(f"{name} is not a readable skops file "
                                         f"({type(exc).__name__})") from None
        _refused(path, found, patterns)
        try:
            audit_tree(tree, trusted=found)
            return tree.construct()
        except Exception as exc:
            raise ModelLoadError(f"skops cannot load {name} ({type(exc).__name__})"
                                 ) from None

    return load_once


def untrusted_types(path: str) -> list[str]:
    """The types of a skops file that skops does not trust by itself (read from its schema;
    nothing is constructed)."""
    sio = import_skops()
    try:
        return sorted(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ModelLoadError(f"{os.path.basename(path)} is not a readable skops file "
                             f"({type(exc).__name__})") from None


# --- served models ------------------------------------------------------------------------------

class ServedModel:
    """A loaded model answering for column-named inputs: `predict` gives the environment's label
    values (or numbers, for regression), `predict_proba` one column per class of `classes`."""

    def __init__(self, descriptor: dict[str, Any]) -> None:
        self.descriptor = descriptor
        self.inputs: list[str] = list(descriptor.get("inputs") or [])
        self.classes: list[Any] | None = descriptor.get("classes")
        self.is_classifier = descriptor.get("task") == "classification"
        self.has_proba = self.is_classifier

    @property
    def classes_(self) -> Any:  # the scikit-learn name, for code that scores estimators
        import numpy as np

        return np.asarray(self.classes, dtype=object if self.classes and isinstance(
            self.classes[0], str) else None)

    def predict(self, columns: Any) -> Any:
        raise NotImplementedError

    def predict_proba(self, columns: Any) -> Any:
        raise NotImplementedError

    def _label_values(self, codes: Any) -> Any:
        """Predicted classes as the environment's values (integer codes mapped through
        `classes` when the model predicts codes)."""
        import numpy as np

        values = np.asarray(codes).reshape(-1)
        if not self.descriptor.get("encoded_labels"):
            return values
        table = np.asarray(self.classes, dtype=object)
        return table[values.astype(np.int64)]


class EstimatorModel(ServedModel):
    """A scikit-learn-API estimator loaded from skops (or, when allowed, a pickle)."""

    def __init__(self, descriptor: dict[str, Any], estimator: Any) -> None:
        raw = getattr(estimator, "classes_", None)
        if "task" not in descriptor:  # an artifact built before descriptors: the model says
            descriptor = {**descriptor, "task": "classification" if raw is not None
                          else "regression"}
        if descriptor.get("classes") is None and raw is not None:
            descriptor = {**descriptor, "classes": [
                c.item() if hasattr(c, "item") else c for c in raw]}
        super().__init__(descriptor)
        self.estimator = estimator
        self.has_proba = self.is_classifier and hasattr(estimator, "predict_proba")

    def _frame(self, columns: Any) -> Any:
        import pandas as pd

        if isinstance(columns, pd.DataFrame):
            return columns[self.inputs] if self.inputs else columns
        return pd.DataFrame({name: columns[name] for name in self.inputs or columns})

    def predict(self, columns: Any) -> Any:
        out = self.estimator.predict(self._frame(columns))
        return self._label_values(out) if self.is_classifier else out

    def predict_proba(self, columns: Any) -> Any:
        return self.estimator.predict_proba(self._frame(columns))


_FLOATS = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}


class OnnxModel(ServedModel):
    """An ONNX graph run by onnxruntime: one graph input per model input column."""

    def __init__(self, descriptor: dict[str, Any], session: Any) -> None:
        super().__init__(descriptor)
        self.session = session
        self._graph_inputs = [(i.name, i.type, len(i.shape or [])) for i in session.get_inputs()]
        outputs = [(o.name, o.type, len(o.shape or [])) for o in session.get_outputs()]
        self._label_out, self._proba_out, self._value_out = _roles(outputs, self.is_classifier)
        self.inputs = self.inputs or [name for name, _, _ in self._graph_inputs]
        self.has_proba = self._proba_out is not None

    def feeds(self, columns: Any) -> dict[str, Any]:
        """The graph's inputs from named columns (a DataFrame or a mapping of sequences), null
        (None or NaN) as NaN for float inputs and as "" for string inputs; vectorised."""
        import numpy as np

        feeds = {}
        for name, kind, rank in self._graph_inputs:
            raw = np.asarray(columns[name])
            if raw.dtype == object:
                missing = np.asarray((raw == None) | (raw != raw), dtype=bool)  # noqa: E711
            elif raw.dtype.kind == "f":
                missing = np.isnan(raw)
            else:
                missing = np.zeros(raw.shape, dtype=bool)
            if kind == "tensor(string)":
                arr = np.where(missing, "", raw.astype(object)).astype(str)
            elif kind in _FLOATS:
                arr = np.where(missing, np.nan, raw).astype(np.float64).astype(_FLOATS[kind])
            elif kind == "tensor(bool)" or kind.startswith(("tensor(int", "tensor(uint")):
                if missing.any():
                    raise ModelLoadError(f"input '{name}' is null, but the graph takes "
                                         f"{kind[7:-1]}")
                arr = raw.astype(bool if kind == "tensor(bool)" else np.int64)
                arr = arr.astype(kind[7:-1]) if kind != "tensor(bool)" else arr
            else:
                raise ModelLoadError(f"graph input '{name}' has type {kind}, which buildenv "
                                     "cannot feed from a column")
            feeds[name] = arr.reshape(-1, 1) if rank == 2 else arr.reshape(-1)
        return feeds

    def run(self, columns: Any) -> dict[str, Any]:
        names = [n for n in (self._label_out, self._proba_out, self._value_out) if n]
        return dict(zip(names, self.session.run(names, self.feeds(columns))))

    def predict(self, columns: Any) -> Any:
        import numpy as np

        if not self.is_classifier:
            out = self.run(columns)
            return np.asarray(out[str(self._value_out)], dtype=np.float64).reshape(-1)
        return self.predict_both(columns)[0]

    def predict_proba(self, columns: Any) -> Any:
        import numpy as np

        if not self._proba_out:
            raise ModelLoadError("the graph has no probability output")
        return np.asarray(self.run(columns)[self._proba_out], dtype=np.float64)

    def predict_both(self, columns: Any) -> tuple[Any, Any]:
        """Labels and probabilities from one run of the graph."""
        import numpy as np

        out = self.run(columns)
        proba = np.asarray(out[self._proba_out], dtype=np.float64) if self._proba_out else None
        if self._label_out:
            labels = self._label_values(out[self._label_out])
        else:
            assert proba is not None  # _roles: a classifier has a label or probabilities
            labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        return labels, proba


def _roles(outputs: list[tuple[str, str, int]], classifier: bool
           ) -> tuple[str | None, str | None, str | None]:
    """(label, probabilities, value) output names: by buildenv's names (`label`,
    `probabilities`, `variable`), else by type (a 2-D float output is probabilities)."""
    names = {name: (kind, rank) for name, kind, rank in outputs}
    floats = [n for n, (k, _) in names.items() if k in ("tensor(float)", "tensor(double)")]
    if not classifier:
        value = "variable" if "variable" in names else (floats[0] if floats else None)
        if value is None:
            raise ModelLoadError("the graph has no float output to answer with")
        return None, None, value
    label = "label" if "label" in names else None
    proba = "probabilities" if "probabilities" in names else next(
        (n for n in floats if names[n][1] == 2), None)
    if label is None and proba is None:
        raise ModelLoadError("the graph has neither a `label` nor a probability output")
    return label, proba, None


def load(directory: str, descriptor: dict[str, Any], trusted: list[str] | None = None,
         allow_pickle: bool = False, threads: int | None = None,
         known: SkopsTree | None = None) -> ServedModel:
    """Load the model file the descriptor names. `trusted`: the type globs a skops file may
    hold beyond skops' own (`trusted_patterns(serving.ops)`); `allow_pickle`: whether a pickle
    may be loaded at all; `known`: skops' tree of the bytes just written to the file (used
    only if the file holds exactly those bytes). Raises ModelLoadError."""
    fmt = descriptor.get("format")
    path = os.path.join(directory, descriptor.get("file") or "")
    if not os.path.isfile(path):
        raise ModelLoadError(f"the model file {descriptor.get('file')!r} is missing")
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError as exc:
            raise ModelLoadError(f"onnxruntime is not installed ({exc})") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime cannot load {descriptor['file']}: "
                                 f"{str(exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
        return OnnxModel(descriptor, session)
    if fmt == "skops":
        return EstimatorModel(descriptor, _load_skops(path, trusted or [], known))
    if fmt == "pickle":
        if not allow_pickle:
            raise ModelLoadError("the model is a pickle, and pickles are not accepted here "
                                 "(serving.format: pickle opts in)")
        with open(path, "rb") as stream:
            return EstimatorModel(descriptor, pickle.load(stream))
    raise ModelLoadError(f"unknown model format {fmt!r}")


def _load_skops(path: str, patterns: list[str], known: SkopsTree | None = None) -> Any:
    sio = import_skops()
    once = _skops_in_one_pass()
    if once is not None:
        return once(path, patterns, known)
    found = untrusted_types(path)
    _refused(path, found, patterns)
    try:
        return sio.load(path, trusted=found)
    except Exception as exc:
        raise ModelLoadError(f"skops cannot load {os.path.basename(path)} "
                             f"({type(exc).__name__})") from None
