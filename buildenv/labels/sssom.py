"""Class mappings between taxonomies, in SSSOM TSV (the Simple Standard for Sharing Ontological
Mappings): what a reused label set's classes become in a newer taxonomy.

A file is optional `#` metadata lines (SSSOM's YAML header, e.g. `#curie_map:`), then a header
row and one mapping per row, tab-separated. The columns read are `subject_id` (a class of the
reused, older taxonomy), `predicate_id` and `object_id` (a class of this label set's taxonomy);
other SSSOM columns (`mapping_justification`, `confidence`, ...) are allowed and ignored. Class
ids may carry a CURIE prefix (`genre-v1:drama`): an id that is not itself a class is read as
`prefix:class`.

Which reused labels carry over automatically (`decide`):

| rows for the old class | meaning | reused? |
| --- | --- | --- |
| one `skos:exactMatch` | same class | yes |
| one `skos:broadMatch` | the new class is broader (fine to coarse) | yes |
| one `skos:narrowMatch` | the new class is narrower: the old class was split | no: relabel |
| one `skos:closeMatch` | similar, not interchangeable | no: relabel |
| several rows | several targets | no: relabel |
| none | not mapped | no: relabel |
"""

from __future__ import annotations

from dataclasses import dataclass

from buildenv.labels.annotations import ExportError

__all__ = ["PREDICATES", "Decision", "MappingRow", "decide", "parse_sssom"]

PREDICATES = ("skos:exactMatch", "skos:broadMatch", "skos:narrowMatch", "skos:closeMatch")
AUTOMATIC = ("skos:exactMatch", "skos:broadMatch")
REQUIRED = ("subject_id", "predicate_id", "object_id")


@dataclass(frozen=True)
class MappingRow:
    line: int  # 1-based line of the TSV file
    subject: str
    predicate: str
    object: str


@dataclass(frozen=True)
class Decision:
    """What happens to reused labels of one old class."""

    kind: str  # exact | broad | split | close | several | unmapped
    target: str | None  # the new class, when reused automatically

    @property
    def reused(self) -> bool:
        return self.target is not None


def parse_sssom(data: bytes, display: str) -> list[MappingRow]:
    """The mapping rows; ExportError(BE857) naming the TSV line of the first bad row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExportError("BE857", f"{display}: not UTF-8 text: an SSSOM mapping is a TSV "
                          "file") from None
    header: list[str] | None = None
    rows: list[MappingRow] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or (header is None and raw.startswith("#")):
            continue
        fields = raw.split("\t")
        if header is None:
            header = [f.strip() for f in fields]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ExportError("BE857", f"{display}:{number}: the header has no "
                                  f"{', '.join(missing)} column (an SSSOM TSV mapping needs "
                                  f"{', '.join(REQUIRED)}, tab-separated)")
            at = {c: header.index(c) for c in REQUIRED}
            continue
        if len(fields) != len(header):
            raise ExportError("BE857", f"{display}:{number}: {len(fields)} fields, the header "
                              f"has {len(header)} (columns are separated by tabs)")
        subject, predicate, obj = (fields[at[c]].strip() for c in REQUIRED)
        if predicate not in PREDICATES:
            raise ExportError("BE857", f"{display}:{number}: predicate_id '{predicate}' is not "
                              f"one of {', '.join(PREDICATES)}")
        if not subject or not obj:
            raise ExportError("BE857", f"{display}:{number}: empty "
                              f"{'subject_id' if not subject else 'object_id'}")
        rows.append(MappingRow(number, subject, predicate, obj))
    if header is None:
        raise ExportError("BE857", f"{display}: no header row (an SSSOM TSV mapping needs "
                          f"{', '.join(REQUIRED)}, tab-separated)")
    return rows


def _class_of(cid: str, classes: list[str]) -> str | None:
    if cid in classes:
        return cid
    if ":" in cid:
        local = cid.split(":", 1)[1]
        if local in classes:
            return local
    return None


def decide(rows: list[MappingRow], old: list[str], new: list[str], display: str,
           old_name: str, new_name: str) -> dict[str, Decision]:
    """Per class of the old taxonomy, whether and where its labels are reused. A row naming a
    class neither taxonomy has is ExportError(BE858) at its TSV line."""
    targets: dict[str, list[tuple[str, str]]] = {c: [] for c in old}
    for row in rows:
        subject = _class_of(row.subject, old)
        if subject is None:
            raise ExportError("BE858", f"{display}:{row.line}: subject_id '{row.subject}' is not "
                              f"a class of {old_name} ({', '.join(old[:8])}"
                              f"{', ...' if len(old) > 8 else ''})")
        obj = _class_of(row.object, new)
        if obj is None:
            raise ExportError("BE858", f"{display}:{row.line}: object_id '{row.object}' is not "
                              f"a class of {new_name} ({', '.join(new[:8])}"
                              f"{', ...' if len(new) > 8 else ''})")
        if (row.predicate, obj) not in targets[subject]:
            targets[subject].append((row.predicate, obj))
    out = {}
    for cls, found in targets.items():
        if not found:
            out[cls] = Decision("unmapped", None)
        elif len(found) > 1:
            out[cls] = Decision("several", None)
        else:
            predicate, obj = found[0]
            kind = {"skos:exactMatch": "exact", "skos:broadMatch": "broad",
                    "skos:narrowMatch": "split", "skos:closeMatch": "close"}[predicate]
            out[cls] = Decision(kind, obj if predicate in AUTOMATIC else None)
    return out


def identity(old: list[str]) -> dict[str, Decision]:
    """Reuse without a mapping: each class is itself (the taxonomies agree)."""
    return {c: Decision("exact", c) for c in old}
