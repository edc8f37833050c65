"""Reading an environment's label sets through the data gate, and resolving them.

`LabelSets` is the one way label bytes enter buildenv: every export and mapping file is opened
with `Gate.open_file`, so it is pinned while it is parsed and verified against the lock's
digest after the last byte (`BE059` when they differ: nothing parsed is used). Exports whose
examples belong to a restricted dataset are audited like the dataset, and no message carries
an example's data. Files are parsed once per `LabelSets`; resolutions (`resolve.resolve_set`)
are computed once per set, reused sets first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Resolved
from buildenv.env.spec import LabelSet
from buildenv.labels.annotations import Annotations, ExportError, outside_taxonomy
from buildenv.labels.label_studio import read_label_studio
from buildenv.labels.parquet import read_parquet_labels
from buildenv.labels.resolve import Place, Resolution, resolve_set
from buildenv.labels.sssom import Decision, decide, identity, parse_sssom

__all__ = ["LabelError", "LabelFile", "LabelSets", "place_for"]


class LabelError(Exception):
    """A label set that cannot be used; `diagnostics` say why (safe to show)."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics


@dataclass
class LabelFile:
    """One parsed export: its annotations and the digest of exactly the bytes parsed."""

    name: str
    spec: LabelSet
    digest: str
    size: int
    annotations: Annotations


def place_for(where: Resolved | None) -> Place:
    """Diagnostics at YAML key paths of `where` (a Resolved), or unplaced without one."""
    def place(code: str, message: str, *path: Any, severity: Severity = Severity.ERROR,
              hints: tuple[str, ...] = ()) -> Diagnostic:
        if where is not None:
            return where.diag(code, message, *path, hints=hints, severity=severity)
        return Diagnostic(code, message, severity=severity, hints=hints)
    return place


class LabelSets:
    """The label sets of one environment, read through `gate`.

    `pins` maps each label set to the lock's `{"digest", "mappings": {uri: digest}}`; None
    reads unpinned (locking: the digest found is the one locked)."""

    def __init__(self, gate: Gate, pins: dict[str, dict[str, Any]] | None,
                 where: Resolved | None = None):
        self.gate = gate
        self.env = gate.env
        self.pins = pins
        self.where = where
        self.place = place_for(where)
        self._files: dict[str, LabelFile] = {}
        self._decisions: dict[tuple[str, int], dict[str, Decision]] = {}
        self._resolved: dict[str, Resolution] = {}
        self.mapping_digests: dict[str, str] = {}

    def spec(self, name: str) -> LabelSet:
        return self.env.labels[name]

    def _expect(self, name: str, mapping: str | None = None) -> str | None:
        if self.pins is None:
            return None
        pinned = self.pins.get(name)
        if pinned is None:
            raise LabelError([self.place("BE057", f"label set '{name}' is not in the lock",
                                         "labels", name,
                                         hints=(f"run `buildenv lock {self.env.name}`",))])
        if mapping is None:
            digest: str = pinned["digest"]
            return digest
        found: str | None = (pinned.get("mappings") or {}).get(mapping)
        if found is None:
            raise LabelError([self.place("BE057", f"label set '{name}': mapping '{mapping}' is "
                                         "not in the lock", "labels", name,
                                         hints=(f"run `buildenv lock {self.env.name}`",))])
        return found

    # --- exports ------------------------------------------------------------------------------
    def file(self, name: str) -> LabelFile:
        if name not in self._files:
            self._files[name] = self._read(name)
        return self._files[name]

    def _read(self, name: str) -> LabelFile:
        spec = self.spec(name)
        expect = self._expect(name)
        restricted = spec.dataset if self.env.restricted(spec.dataset) else None
        try:
            read = self.gate.open_file(
                spec.uri, what=f"label set '{name}'", expect=expect,
                place=("labels", name, "uri"), restricted_dataset=restricted,
                missing_code="BE853", mismatch_code="BE059", labels=name)
        except GateError as exc:
            raise LabelError([exc.diagnostic]) from None
        with read:
            try:
                if spec.format == "label-studio":
                    assert spec.field is not None  # the environment's checks require it
                    annotations = read_label_studio(
                        read.chunks(), key=spec.key, field=spec.field,
                        ui_version=spec.ui_version, display=spec.uri)
                else:
                    annotations = read_parquet_labels(
                        read, ui_version=spec.ui_version,
                        taxonomy_version=str(spec.taxonomy.version), display=spec.uri)
                read.rows_read = len(annotations)
                digest = read.verify()
            except ExportError as exc:
                try:  # bytes that are not the locked ones explain any parse error
                    read.verify()
                except GateError as mismatch:
                    raise LabelError([mismatch.diagnostic]) from None
                raise LabelError([self.place(
                    exc.code, f"label set '{name}': {exc.message}", "labels", name,
                    "field" if exc.code == "BE867" else "uri")]) from None
            except GateError as exc:
                raise LabelError([exc.diagnostic]) from None
        outside = outside_taxonomy(annotations, spec.taxonomy.classes)
        if outside:
            total = sum(n for n, _ in outside.values())
            ranked = sorted(outside.items(), key=lambda kv: (-kv[1][0], kv[0]))
            shown = ", ".join(f"'{c}' {n:,} (first at {annotations.where(spec.uri, i)})"
                              for c, (n, i) in ranked[:5])
            more = f" and {len(ranked) - 5} more" if len(ranked) > 5 else ""
            raise LabelError([self.place(
                "BE856", f"label set '{name}': {total:,} of {len(annotations):,} annotation(s) "
                f"choose classes outside taxonomy {spec.taxonomy.name} "
                f"v{spec.taxonomy.version}: {shown}{more}", "labels", name, "taxonomy",
                hints=("add the classes to `taxonomy.classes` (a new taxonomy version), or fix "
                       "the annotations",))])
        return LabelFile(name, spec, digest, read.size, annotations)

    # --- mappings -----------------------------------------------------------------------------
    def decisions(self, name: str, index: int) -> dict[str, Decision]:
        key = (name, index)
        if key not in self._decisions:
            self._decisions[key] = self._mapping(name, index)
        return self._decisions[key]

    def _mapping(self, name: str, index: int) -> dict[str, Decision]:
        spec = self.spec(name)
        entry = spec.reuse[index]
        other = self.spec(entry.labels)
        if entry.mapping is None:
            return identity(list(other.taxonomy.classes))
        place = ("labels", name, "reuse", index, "mapping")
        expect = self._expect(name, entry.mapping)
        try:
            with self.gate.open_file(entry.mapping, what=f"mapping of label set '{name}'",
                                     expect=expect, place=place, missing_code="BE853",
                                     mismatch_code="BE059") as read:
                data = b"".join(read.chunks())
                digest = read.verify()
        except GateError as exc:
            raise LabelError([exc.diagnostic]) from None
        self.mapping_digests[entry.mapping] = digest
        try:
            rows = parse_sssom(data, entry.mapping)
            return decide(rows, list(other.taxonomy.classes), list(spec.taxonomy.classes),
                          entry.mapping, f"'{entry.labels}' ({other.taxonomy.name} "
                          f"v{other.taxonomy.version})", f"'{name}' ({spec.taxonomy.name} "
                          f"v{spec.taxonomy.version})")
        except ExportError as exc:
            raise LabelError([self.place(exc.code, f"label set '{name}': {exc.message}",
                                         *place)]) from None

    # --- resolution ---------------------------------------------------------------------------
    def resolve(self, name: str, _active: tuple[str, ...] = ()) -> Resolution:
        if name in self._resolved:
            return self._resolved[name]
        if name in _active:  # the environment's checks report cycles (BE852) first
            raise LabelError([self.place("BE852", f"reuse cycle: {' -> '.join((*_active, name))}",
                                         "labels", name, "reuse")])
        spec = self.spec(name)
        own = self.file(name).annotations
        reused = []
        for i, entry in enumerate(spec.reuse):
            other = self.resolve(entry.labels, (*_active, name))
            reused.append((entry, other, self.decisions(name, i)))
        resolution = resolve_set(name, spec, own, reused, self.place)
        self._resolved[name] = resolution
        return resolution
