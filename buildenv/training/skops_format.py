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

from buildenv.core.model_runtime import trusted_patterns
from buildenv.training.skops_table import import_with

__all__ = ["canonical", "dumps", "refused_types", "untrusted_in"]

_GENERATED = re.compile(r"^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                        r"\.(?:npy|bin)$")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def dumps(model: Any) -> bytes:
    """The model's canonical skops bytes."""
    return canonical(import_with().dumps(model))


def canonical(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read("schema.json"))
        numbers: dict[str, int] = {}

        def number(key: str) -> int:
            return numbers.setdefault(key, len(numbers))

        def visit(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "__id__" and isinstance(value, int):
                        node[key] = number(str(value))
                    elif key == "file" and isinstance(value, str) and _GENERATED.match(value):
                        stem, ext = value.rsplit(".", 1)
                        node[key] = f"{number(stem)}.{ext}"
                    else:
                        visit(value)
            elif isinstance(node, list):
                for value in node:
                    visit(value)

        visit(schema)
        members = {"schema.json": json.dumps(schema, indent=2).encode("utf-8")}
        for name in source.namelist():
            if name == "schema.json":
                continue
            if _GENERATED.match(name):
                stem, ext = name.rsplit(".", 1)
                if stem not in numbers:
                    continue  # a member the schema never refers to
                members[f"{numbers[stem]}.{ext}"] = source.read(name)
            else:
                members[name] = source.read(name)
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


def refused_types(data: bytes, ops: list[str], untrusted: list[str] | None = None
                  ) -> list[str]:
    """The file's types that neither skops nor the environment's `serving.ops` trust
    (`untrusted`: `untrusted_in(data)` when already known; reading it parses the file)."""
    patterns = trusted_patterns(ops)
    return [t for t in (untrusted_in(data) if untrusted is None else untrusted)
            if not any(fnmatch.fnmatchcase(t, p) for p in patterns)]
