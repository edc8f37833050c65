"""scikit-learn-API models as skops files: pickle-free, byte-identical for the same model.

skops writes a zip of `schema.json` (the object tree) and array/bytes members. Three things in
it change from one process to the next although the model does not: object ids (memory
addresses, in `__id__` fields and in `<id>.npy` member names), `<uuid4>.bin` names of bytes
members (XGBoost's booster), and the zip timestamps. `canonical` renumbers ids and member names
in the schema's document order, and writes the members sorted, stored (not compressed), dated
1980-01-01. The result loads like the original; the layout is skops 0.16's (pinned).

Which types a file may hold is the environment's decision (`model_runtime.trusted_patterns` of
`serving.ops`): `refused_types` names the ones it holds beyond that.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import zipfile
from typing import Any

from buildenv.core.model_runtime import SkopsTree, skops_tree, trusted_patterns
from buildenv.training.skops_table import import_with

__all__ = ["canonical", "dumps", "read_tree", "refused_types", "untrusted_in"]

# Deferred imports (skops): imported through `skops_table.import_with` (with the build's cached
# table of scikit-learn classes) before its saving internals are used, never at the top.

_GENERATED = re.compile(r"^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                        r"\.(?:npy|bin)$")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def dumps(model: Any) -> bytes:
    """The model's canonical skops bytes: `canonical(skops.io.dumps(model))`, written without
    skops' own zip (`_state_of`)."""
    sio = import_with()
    try:
        state, members = _state_of(model)
    except _Unexpected:  # not the skops this was written for: its own file, canonicalised
        return canonical(sio.dumps(model))
    return _written(state, members)


def canonical(data: bytes) -> bytes:
    """A skops file's canonical bytes (ids and generated member names renumbered in document
    order, members sorted and stored, dated 1980-01-01)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read("schema.json"))
        members = {name: source.read(name) for name in source.namelist()
                   if name != "schema.json"}
    return _written(schema, members)


class _Unexpected(Exception):
    """skops' saving internals are not the pinned version's."""


class _Members:
    """What skops' savers write into their zip (`writestr`, and `namelist` to skip an array
    written already), kept in memory: the canonical file is written once, from the state."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def namelist(self) -> dict[str, bytes]:  # only ever asked `name in namelist()`
        return self.files

    def writestr(self, name: str, data: Any) -> None:
        self.files[name] = bytes(data)


def _state_of(model: Any) -> tuple[Any, dict[str, bytes]]:
    """skops' schema of `model` and its member files, as `skops.io.dumps` computes them (its
    `_persist._save`, pinned skops 0.16) but without writing them into a zip, encoding the
    schema and reading both back to canonicalise them: the same bytes in the end
    (`tests/test_skops_format.py`), for a third of the CPU."""
    import skops
    from skops.io import _utils

    context_type, get_state = getattr(_utils, "SaveContext", None), \
        getattr(_utils, "get_state", None)
    if skops.__version__ != _SKOPS or context_type is None or get_state is None:
        raise _Unexpected
    members = _Members()
    context = context_type(zip_file=members)
    state = get_state(model, context)
    context.clear_memo()
    state["protocol"] = context.protocol
    state["_skops_version"] = skops.__version__
    return state, members.files


_SKOPS = "0.16.0"  # the version whose saving `_state_of` repeats (pyproject pins it)


def _written(schema: Any, files: dict[str, bytes]) -> bytes:
    numbers: dict[str, int] = {}

    def number(key: str) -> int:
        return numbers.setdefault(key, len(numbers))

    def visit(node: Any) -> Any:  # a renumbered copy (a node may occur twice in the state)
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = number(str(value))
                elif key == "file" and isinstance(value, str) and _GENERATED.match(value):
                    stem, ext = value.rsplit(".", 1)
                    out[key] = f"{number(stem)}.{ext}"
                else:
                    out[key] = visit(value)
            return out
        if isinstance(node, (list, tuple)):
            return [visit(value) for value in node]
        return node

    members = {"schema.json": json.dumps(visit(schema), indent=2).encode("utf-8")}
    for name, data in files.items():
        if _GENERATED.match(name):
            stem, ext = name.rsplit(".", 1)
            if stem not in numbers:
                continue  # a member the schema never refers to
            members[f"{numbers[stem]}.{ext}"] = data
        else:
            members[name] = data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            target.writestr(info, members[name])
    return out.getvalue()


def untrusted_in(data: bytes) -> list[str]:
    """Types of a skops file that skops does not trust by itself."""
    return sorted(import_with().get_untrusted_types(data=data))


def read_tree(data: bytes) -> tuple[list[str], SkopsTree | None]:
    """`untrusted_in(data)`, and skops' tree of `data` that answered it (None with a skops
    whose internals `model_runtime.skops_tree` does not know): the load back of the file
    these bytes are written to constructs that tree instead of building it again."""
    import_with()
    tree = skops_tree(data)
    if tree is None:
        return untrusted_in(data), None
    return tree.untrusted, tree


def refused_types(data: bytes, ops: list[str], untrusted: list[str] | None = None
                  ) -> list[str]:
    """The file's types that neither skops nor the environment's `serving.ops` trust
    (`untrusted`: `untrusted_in(data)` when already known; reading it parses the file)."""
    patterns = trusted_patterns(ops)
    return [t for t in (untrusted_in(data) if untrusted is None else untrusted)
            if not any(fnmatch.fnmatchcase(t, p) for p in patterns)]
