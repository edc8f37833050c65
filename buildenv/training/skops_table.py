"""skops' table of scikit-learn's estimator classes, kept once per installation.

`import skops.io` lists the classes it trusts by default with scikit-learn's
`all_estimators()`, which imports every public scikit-learn module (about 290 modules:
0.15-0.45 s of Python). In the training process that import runs beside the full fit
(`beside._warm`) and takes the interpreter's lock from the fit's Python steps. The list is a
function of the installed skops and scikit-learn only, so the build keeps it in the user's cache
(`$XDG_CACHE_HOME/buildenv/skops-types/`, one file per interpreter) and hands it to the runner in
its request; the runner imports skops with `all_estimators()` answering from it.

The table is used only when its key (Python's, skops' and scikit-learn's versions and
scikit-learn's location, `key()`) equals the runner's own: any upgrade or another installation
builds it afresh the slow way, and the runner returns the fresh table for the build to store
(`store`; the sandboxed runner can write no cache itself). skops keeps only the classes' names,
so what it trusts, and every artifact byte, is the same either way
(`tests/test_skops_table.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from buildenv.core.model_runtime import import_skops
from buildenv.core.own_files import read_own

__all__ = ["cached", "fresh", "import_with", "key", "offer", "store"]

# Deferred imports (skops, sklearn): the build imports this module to read and store the table
# without scikit-learn; the training process imports them only to load skops.

_OFFERED: list[dict] = []  # the build's table for this runner (`offer`), at most one
_FRESH: list[dict] = []  # a table this process built the slow way, for the build to store


def key() -> dict[str, str]:
    """What the table depends on: Python's, skops' and scikit-learn's versions and where
    scikit-learn is installed (read from the distributions' metadata; nothing imported)."""
    out = {"python": sys.version.split()[0]}
    for name in ("skops", "scikit-learn"):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
            continue
        out[name] = dist.version
        out[f"{name} at"] = str(dist.locate_file(""))
    return out


def offer(table: Any) -> None:
    """The table the build read from its cache (`cached`), for `import_with` to use when its
    key is this process's."""
    _OFFERED.clear()
    if isinstance(table, dict):
        _OFFERED.append(table)


def fresh() -> dict | None:
    """The table this process built the slow way, if it did (for the build to `store`)."""
    return _FRESH[0] if _FRESH else None


def import_with() -> Any:
    """`skops.io` (`model_runtime.import_skops`), its scikit-learn table from the offered one
    when that one's key is this installation's, else built by skops (and kept for `fresh`)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    mine = key()
    names = _names(_OFFERED[0], mine) if _OFFERED else None
    if names is None:
        sio = import_skops()
        from skops.io import _trusted_types

        built = list(_trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES)
        if all(isinstance(n, str) for n in built):
            _FRESH[:] = [{"key": mine, "names": built}]
        return sio
    with _estimators_named(names):
        return import_skops()


def _names(table: dict, mine: dict[str, str]) -> list[str] | None:
    names = table.get("names")
    if table.get("key") != mine or not isinstance(names, list) or \
            not all(isinstance(n, str) and n.startswith("sklearn.") and
                    all(part.isidentifier() for part in n.split(".")) for n in names):
        return None  # skops trusts scikit-learn's own classes only: nothing else is taken
    return names


@contextlib.contextmanager
def _estimators_named(names: list[str]) -> Iterator[None]:
    """While skops imports, scikit-learn's `all_estimators()` returns stand-ins named as the
    table says (skops reads only each class's module and name) instead of importing every
    module to find the classes. (Another thread calling `all_estimators` in this moment would
    get the stand-ins too; the runner's other thread is the user's fit.)"""
    import sklearn.utils

    def stand_ins(type_filter: Any = None) -> list[tuple[str, type]]:
        out = []
        for name in names:
            module, _, qualname = name.rpartition(".")
            out.append((qualname, type(qualname, (), {"__module__": module})))
        return out

    original = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = stand_ins
    try:
        yield
    finally:
        sklearn.utils.all_estimators = original


def _cache_file(python: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = hashlib.sha256(os.path.abspath(python).encode()).hexdigest()[:32]
    return Path(base) / "buildenv" / "skops-types" / f"{name}.json"


def cached(python: str) -> dict | None:
    """The table last stored for the interpreter `python` (None when there is none, it is
    unreadable, or another user could have written it); whether it still fits is the runner's
    decision (its key)."""
    data = read_own(_cache_file(python))
    try:
        table = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return table if isinstance(table, dict) else None


def store(python: str, table: Any) -> None:
    """Keep the runner's fresh table for the interpreter `python` (atomically; best effort: a
    cache that cannot be written costs time, never correctness)."""
    if not isinstance(table, dict) or not isinstance(table.get("key"), dict) or \
            _names(table, table["key"]) is None:
        return
    path = _cache_file(python)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": table["key"], "names": table["names"]}, f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
