"""What both importers build: column drafts, the list of what was not translated, the YAML.

A draft collects the constraints one source (an expectation, a TFDV field) implies for a column,
each with its tolerance (Great Expectations' `1 - mostly`, TFDV's `1 - min_domain_mass`).
`finish` merges them into one `Column` per name: ranges and lengths intersect, domains
intersect, and the one `max_violation_fraction` a buildenv column has is the strictest of the
tolerances (a warning says so when they differ). Every column is validated by the same model
that reads environment files, so the printed YAML always loads; a constraint the model refuses
is dropped and reported instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from buildenv.env.spec import COLUMN_PROBLEM_KEYS, Column

__all__ = ["ColumnDraft", "Imported", "Skipped", "render_yaml"]

VALUE_CONSTRAINTS = ("range", "domain", "pattern", "length", "unique")


@dataclass
class Skipped:
    """Something of the source that the environment does not say (or says only in part)."""

    what: str  # "expect_column_mean_to_be_between on 'fare'", "feature 'x': skew_comparator"
    reason: str
    line: int | None = None
    approximate: bool = False  # translated, but not exactly: BE905 rather than BE903/BE904


@dataclass
class ColumnDraft:
    name: str
    dtype: str | None = None
    nullable: bool = True
    max_null_fraction: float | None = None
    lows: list[tuple[Any, float, str]] = field(default_factory=list)  # (bound, tolerance, by)
    highs: list[tuple[Any, float, str]] = field(default_factory=list)
    domains: list[tuple[list[Any], float, str]] = field(default_factory=list)
    pattern: tuple[str, float, str] | None = None
    length_lows: list[tuple[int, float, str]] = field(default_factory=list)
    length_highs: list[tuple[int, float, str]] = field(default_factory=list)
    unique: tuple[float, str] | None = None
    serving: bool = True
    required: bool = True
    min_count: int | None = None
    allow_nan: bool = True
    monitor: bool = True
    description: str | None = None
    hints: list[str] = field(default_factory=list)  # evidence of the type, for inference
    line: int | None = None

    def finish(self, skipped: list[Skipped]) -> dict[str, Any]:
        """The column's keys (validated), reporting what could not be kept."""
        out: dict[str, Any] = {"dtype": self.dtype or "string", **self._presence()}
        tolerances: dict[str, float] = {}
        sources: dict[str, str] = {}
        if self.domains:
            values = list(self.domains[0][0])
            for other, _, _ in self.domains[1:]:
                values = [v for v in values if v in other]
            out["domain"] = values
            tolerances["domain"] = min(t for _, t, _ in self.domains)
            sources["domain"] = ", ".join(by for _, _, by in self.domains)
        if self.lows or self.highs:
            lo = max((b for b, _, _ in self.lows), default=None)
            hi = min((b for b, _, _ in self.highs), default=None)
            out["range"] = [_plain(lo), _plain(hi)]
            both = self.lows + self.highs
            tolerances["range"] = min(t for _, t, _ in both)
            sources["range"] = ", ".join(dict.fromkeys(by for _, _, by in both))
        if self.pattern is not None:
            out["pattern"] = self.pattern[0]
            tolerances["pattern"], sources["pattern"] = self.pattern[1], self.pattern[2]
        if self.length_lows or self.length_highs:
            lo = max((b for b, _, _ in self.length_lows), default=None)
            hi = min((b for b, _, _ in self.length_highs), default=None)
            out["length"] = [lo, hi]
            both = self.length_lows + self.length_highs
            tolerances["length"] = min(t for _, t, _ in both)
            sources["length"] = ", ".join(dict.fromkeys(by for _, _, by in both))
        if self.unique is not None:
            out["unique"] = True
            tolerances["unique"], sources["unique"] = self.unique
        if tolerances:
            strictest = min(tolerances.values())
            if strictest > 0:
                out["max_violation_fraction"] = strictest
            if len(set(tolerances.values())) > 1:
                shares = ", ".join(f"{sources[k]}: {tolerances[k]:g}"
                                   for k in VALUE_CONSTRAINTS if k in tolerances)
                skipped.append(Skipped(
                    f"column '{self.name}': tolerances", "buildenv has one "
                    "max_violation_fraction per column, and these differ "
                    f"({shares}); the strictest, {strictest:g}, applies to all of them",
                    self.line, approximate=True))
        out.update({key: value for key, value, default in (
            ("monitor", self.monitor, True), ("serving", self.serving, True),
            ("description", self.description, None)) if value != default and value != ""})
        return _validated(self.name, out, skipped, self.line)

    def _presence(self) -> dict[str, Any]:
        """The keys about nulls, presence and NaN that differ from their defaults."""
        out: dict[str, Any] = {}
        if not self.nullable:
            out["nullable"] = False
        if self.max_null_fraction is not None and self.nullable:
            out["max_null_fraction"] = self.max_null_fraction
        if not self.required:
            out["required"] = False
        if self.min_count is not None:
            out["min_count"] = self.min_count
        if not self.allow_nan:
            out["allow_nan"] = False
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _validated(name: str, column: dict[str, Any], skipped: list[Skipped],
               line: int | None) -> dict[str, Any]:
    """Drop keys the environment model refuses (each reported) until the column validates."""
    for _ in range(len(column) + 1):
        try:
            Column.model_validate(column)
            return column
        except ValidationError as exc:
            err = exc.errors()[0]
            key = COLUMN_PROBLEM_KEYS.get(err["type"]) or (str(err["loc"][0]) if err["loc"]
                                                          else None)
            if key is None or key == "dtype" or key not in column:
                raise
            skipped.append(Skipped(f"column '{name}': {key}", f"not valid in an environment: "
                                   f"{err['msg']}", line))
            del column[key]
            if key in VALUE_CONSTRAINTS and not any(k in column for k in VALUE_CONSTRAINTS):
                column.pop("max_violation_fraction", None)
    raise AssertionError("unreachable")  # pragma: no cover


#: Built-in monitoring thresholds an import turns off, so that only the suite's own comparators
#: judge its columns (a child environment's `null` deletes an inherited threshold too).
NO_DEFAULTS = {"drift": {"categorical": {"linf": None}, "numeric": {"psi": None}},
               "skew": {"categorical": {"linf": None, "mismatch": None},
                        "numeric": {"psi": None, "mismatch": None}}}


@dataclass
class Imported:
    """The translation of one suite or schema."""

    source: str  # "Great Expectations suite 'flights'"
    columns: dict[str, dict[str, Any]]
    drift: dict[str, dict[str, float]]
    skipped: list[Skipped]
    translated: int  # items of the source translated (fully or approximately)
    total: int  # items of the source considered
    unit: str = "items"  # what an item is: "expectations", "features"
    skew: dict[str, dict[str, float]] = field(default_factory=dict)
    dataset_keys: dict[str, Any] = field(default_factory=dict)  # undeclared_columns


def render_yaml(imported: Imported, dataset: str, command: str) -> str:
    """The environment YAML: `datasets.<dataset>` (its columns, and what the source says about
    columns it does not list) and the source's own drift and skew thresholds, with buildenv's
    built-in ones turned off (a column the source compares nothing on is `monitor: false`)."""
    head = [f"# {command}",
            f"# from the {imported.source}: {imported.translated} of {imported.total} "
            f"{imported.unit} translated",
            *(["# (the warnings list what was not, or only in part, and why)"]
              if imported.skipped else []),
            "# Paste under an environment's `datasets:` and add the dataset's `uri`."]
    document: dict[str, Any] = {"datasets": {dataset: {**imported.dataset_keys,
                                                       "columns": imported.columns}}}
    if any(c.get("monitor", True) for c in imported.columns.values()):
        monitoring: dict[str, Any] = {}
        for section, thresholds in (("drift", imported.drift), ("skew", imported.skew)):
            monitoring[section] = {**NO_DEFAULTS[section],
                                   **({"columns": thresholds} if thresholds else {})}
        document["monitoring"] = monitoring
    body = yaml.safe_dump(document, default_flow_style=None, sort_keys=False, width=96,
                          allow_unicode=True)
    return "\n".join(head) + "\n" + str(body)
