"""TFDV schemas (`tensorflow.metadata.v0.Schema` in text format) -> environment columns.

Read with the small text-format reader of `textproto` (no TensorFlow needed). Per feature:
`type` gives the dtype (INT -> int64, FLOAT -> float64, BYTES -> string); `int_domain` /
`float_domain` give a range (`disallow_nan`: `allow_nan: false`), `string_domain` (inline or by
name) a domain (an empty one allows no value, as in TFDV), `bool_domain` a two-value domain;
`presence.min_fraction` gives nullable/max_null_fraction and `presence.min_count` gives
`min_count`; a feature with neither (TFDV reports a missing column only under a presence
constraint) is `required: false`; `shape` (a fixed shape: no example may miss it) gives
`nullable: false`; `distribution_constraints.min_domain_mass` gives max_violation_fraction;
environments give `serving: false`; `drift_comparator` and `skew_comparator` give the drift and
skew thresholds (buildenv's `linf` and `jsd` are TFDV's `infinity_norm` and
`jensen_shannon_divergence`; TFDV computes `infinity_norm` on categorical features only, so on a
numeric one it is left out, as TFDV ignores it); a feature with no comparator at all is
`monitor: false`, and buildenv's built-in thresholds are turned off, so only the schema's own
comparators judge drift and skew; TFDV reports every column the schema does not know
(SCHEMA_NEW_COLUMN), so the dataset gets `undeclared_columns: error`; annotation comments give
the description. Everything else is listed with the reason it is not translated.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from buildenv.env.importers.common import ColumnDraft, Imported, Skipped
from buildenv.env.importers.textproto import Message, TextProtoError, parse
from buildenv.env.spec import DriftThreshold

__all__ = ["TfdvError", "import_schema"]


class TfdvError(ValueError):
    """Not a TFDV schema; `line`/`col` locate malformed text."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line, self.col = line, col


_TYPES = {"INT": "int64", "FLOAT": "float64", "BYTES": "string"}
_UNVALIDATED_STAGES = {"PLANNED", "ALPHA", "DEPRECATED", "DEBUG_ONLY", "DISABLED",
                       "VALIDATION_DERIVED"}
_SEMANTIC = ("natural_language_domain", "image_domain", "mid_domain", "url_domain",
             "time_domain", "time_of_day_domain")
_TOP_LEVEL_REASONS = {
    "sparse_feature": "a sparse tensor assembled from index and value features; the features "
                      "it names are translated on their own",
    "weighted_feature": "a weighted combination of two features; the features it names are "
                        "translated on their own",
    "dataset_constraints": "dataset-level example counts; buildenv constrains columns",
    "tensor_representation_group": "how TensorFlow builds input tensors; not a data constraint",
    "represent_variable_length_as_ragged": "how TensorFlow builds input tensors; not a data "
                                           "constraint",
    "generate_legacy_feature_spec": "how TensorFlow builds input tensors; not a data constraint",
}
_KNOWN_TOP_LEVEL = {"feature", "string_domain", "int_domain", "float_domain",
                    "default_environment", "annotation"}


class _Schema:
    def __init__(self, root: Message):
        self.root = root
        self.skipped: list[Skipped] = []
        self.columns: dict[str, dict[str, Any]] = {}
        self.drift: dict[str, dict[str, float]] = {}
        self.skew: dict[str, dict[str, float]] = {}
        self.left_out: list[tuple[str, int | None]] = []  # features not declared at all
        self.defaults = [str(e) for e in root.all("default_environment")]
        self.named: dict[str, tuple[str, Message]] = {}
        for kind in ("string_domain", "int_domain", "float_domain"):
            for domain in root.all(kind):
                if isinstance(domain, Message) and isinstance(domain.get("name"), str):
                    self.named[domain.get("name")] = (kind, domain)


def import_schema(text: str) -> Imported:
    """Translate a schema's text; TfdvError when it is not one."""
    try:
        root = parse(text)
    except TextProtoError as exc:
        raise TfdvError(f"invalid text proto: {exc}", exc.line, exc.col) from None
    features = root.all("feature")
    if not features or not all(isinstance(f, Message) for f in features):
        raise TfdvError("not a TFDV schema: no `feature { ... }` entries")
    schema = _Schema(root)
    for name in root.names():
        if name in _KNOWN_TOP_LEVEL:
            continue
        reason = _TOP_LEVEL_REASONS.get(name, "not a schema field this importer knows")
        schema.skipped.append(Skipped(f"schema: {name}", reason, root.line_of(name)))
    translated = sum(_feature(schema, f) for f in features)
    if schema.left_out:
        names = [n for n, _ in schema.left_out]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        schema.skipped.append(Skipped(
            "schema: features not declared", f"TFDV knows {shown}, but the dataset does not "
            "declare them (see their own warnings), so data holding them is reported as "
            "undeclared columns (undeclared_columns: error); declare them by hand, or lower "
            "undeclared_columns to warn", schema.left_out[0][1], approximate=True))
    return Imported("TFDV schema", schema.columns, schema.drift, schema.skipped, translated,
                    len(features), "features", skew=schema.skew,
                    dataset_keys={"undeclared_columns": "error"})


def _feature(schema: _Schema, f: Message) -> bool:
    """Translate one feature; whether a column came of it."""
    name = f.get("name")
    if not isinstance(name, str) or not name:
        schema.skipped.append(Skipped("feature without a name", "a column needs a name", f.line))
        return False
    if _column(schema, name, f):
        return True
    schema.left_out.append((name, f.line))
    return False


def _column(schema: _Schema, name: str, f: Message) -> bool:
    """Translate the named feature into a column; whether one came of it."""

    def skip(part: str, reason: str, approximate: bool = False) -> None:
        schema.skipped.append(Skipped(f"feature '{name}': {part}", reason,
                                      f.line_of(part.split(".")[0]), approximate))

    stage = f.get("lifecycle_stage")
    if str(stage) in _UNVALIDATED_STAGES or f.get("deprecated") is True:
        skip("lifecycle_stage" if stage is not None else "deprecated",
             f"TFDV does not validate a feature in stage {stage or 'DEPRECATED'}; not declared")
        return False
    kind = str(f.get("type", "TYPE_UNKNOWN"))
    if kind == "STRUCT" or f.get("struct_domain") is not None:
        skip("type", "a nested STRUCT feature has no column equivalent")
        return False
    if not _scalar(f):
        skip("value_count" if f.get("value_count") is not None else
             "shape" if f.get("shape") is not None else "value_counts",
             "a list-valued feature (more than one value per example); buildenv columns hold "
             "one value per row (there is no list dtype)")
        return False
    draft = ColumnDraft(name, line=f.line)
    domain_kind, domain = _domain_of(schema, f, skip)
    if kind in _TYPES:
        draft.dtype = _TYPES[kind]
    elif domain_kind is not None:
        draft.dtype = {"int_domain": "int64", "float_domain": "float64",
                       "string_domain": "string", "bool_domain": "bool"}[domain_kind]
        skip("type", f"no type: declared {draft.dtype} from its {domain_kind}", True)
    else:
        skip("type", "no type and no domain to infer one from; not declared")
        return False
    if domain_kind is not None and domain is not None:
        _apply_domain(draft, kind, domain_kind, domain, f, skip)
    _apply_presence(draft, f)
    _apply_environments(schema, draft, f, skip)
    categorical = kind == "BYTES" or (domain_kind == "int_domain" and domain is not None
                                      and domain.get("is_categorical") is True)
    compared = [_apply_comparator(into, name, f, skip, field, categorical, kind == "INT")
                for field, into in (("drift_comparator", schema.drift),
                                    ("skew_comparator", schema.skew))]
    draft.monitor = any(compared)
    annotation = f.get("annotation")
    if isinstance(annotation, Message):
        comments = [c for c in annotation.all("comment") if isinstance(c, str)]
        if comments:
            draft.description = " ".join(comments)
    handled = {"name", "type", "domain", "int_domain", "float_domain", "string_domain",
               "bool_domain", "presence", "value_count", "shape", "distribution_constraints",
               "in_environment", "not_in_environment", "drift_comparator", "skew_comparator",
               "annotation", "lifecycle_stage", "deprecated", *_SEMANTIC}
    reasons = {
        "unique_constraints": "bounds the number of distinct values, an aggregate (not the "
                              "same as `unique: true`)",
        "group_presence": "presence within a group of a STRUCT feature",
        "sequence_metadata": "sequence features",
        "validation_derived_source": "a feature derived for validation",
    }
    for field_name in f.names():
        if field_name not in handled:
            skip(field_name, reasons.get(field_name, "not a feature field this importer knows"))
    schema.columns[name] = draft.finish(schema.skipped)
    return True


def _scalar(f: Message) -> bool:
    if f.get("value_counts") is not None:
        return False
    count = f.get("value_count")
    if isinstance(count, Message) and (count.get("max") != 1 or (count.get("min") or 0) > 1):
        return False
    shape = f.get("shape")
    if isinstance(shape, Message):
        sizes = [d.get("size") for d in shape.all("dim") if isinstance(d, Message)]
        if any(size != 1 for size in sizes):
            return False
    return True


class _Skip(Protocol):
    """Records a part of the schema buildenv leaves out, and why."""

    def __call__(self, part: str, reason: str, approximate: bool = False) -> None: ...


def _domain_of(schema: _Schema, f: Message, skip: _Skip) -> tuple[str | None, Message | None]:
    for kind in ("int_domain", "float_domain", "string_domain", "bool_domain"):
        value = f.get(kind)
        if isinstance(value, Message):
            return kind, value
    ref = f.get("domain")
    if isinstance(ref, str):
        if ref in schema.named:
            return schema.named[ref]
        skip("domain", f"refers to a domain named '{ref}' that the schema does not define")
    for kind in _SEMANTIC:
        if f.get(kind) is not None:
            skip(kind, "a semantic domain (what the values mean, not which are allowed); the "
                 "column is declared with its type")
    return None, None


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _apply_domain(draft: ColumnDraft, kind: str, domain_kind: str, domain: Message,
                  f: Message, skip: _Skip) -> None:
    mass = None
    constraints = f.get("distribution_constraints")
    if isinstance(constraints, Message):
        mass = _number(constraints.get("min_domain_mass"))
    tolerance = round(1.0 - float(mass), 12) if mass is not None and 0 <= mass <= 1 else 0.0
    if domain_kind in ("int_domain", "float_domain"):
        if kind == "BYTES":
            skip(domain_kind, "BYTES values that hold numbers; declare the column numeric once "
                 "the values are parsed")
            return
        lo, hi = _number(domain.get("min")), _number(domain.get("max"))
        if lo is not None:
            draft.lows.append((lo, 0.0, domain_kind))
        if hi is not None:
            draft.highs.append((hi, 0.0, domain_kind))
        if domain_kind == "float_domain":
            _float_domain(draft, domain, lo is not None and hi is not None, skip)
        if mass is not None:
            skip("distribution_constraints", "min_domain_mass applies to string domains")
        return
    if domain_kind == "string_domain":
        values = [v for v in domain.all("value") if isinstance(v, str)]
        if kind == "INT":
            skip("string_domain", "a string domain on an INT feature")
            return
        draft.domains.append((values, tolerance, "string_domain"))
        return
    # bool_domain: INT features hold 0/1; BYTES features the two strings it names
    if kind == "INT":
        draft.domains.append(([0, 1], tolerance, "bool_domain"))
    elif kind == "BYTES":
        values = [v for v in (domain.get("true_value"), domain.get("false_value"))
                  if isinstance(v, str)]
        if len(values) < 2:
            skip("bool_domain", "names no true_value/false_value strings to allow")
            return
        draft.domains.append((values, tolerance, "bool_domain"))
    else:
        skip("bool_domain", f"a bool domain on a {kind} feature")


def _float_domain(draft: ColumnDraft, domain: Message, both_ends: bool, skip: _Skip) -> None:
    """What a float_domain asks beyond its range: `disallow_nan` is `allow_nan: false`; the
    rest buildenv leaves out, saying why."""
    if domain.get("disallow_nan") is True:
        draft.allow_nan = False
    if domain.get("disallow_inf") is True and not both_ends:
        skip("float_domain.disallow_inf", "infinities are refused only by a range "
             "with both ends")
    if domain.get("is_embedding") is True:
        skip("float_domain.is_embedding", "embeddings are list-valued")


def _apply_presence(draft: ColumnDraft, f: Message) -> None:
    """TFDV reports a missing column only under a presence constraint (min_count or
    min_fraction above 0); a fixed `shape` forbids missing values in the examples."""
    presence = f.get("presence")
    fraction = count = 0.0
    if isinstance(presence, Message):
        fraction = _number(presence.get("min_fraction")) or 0
        count = _number(presence.get("min_count")) or 0
    if fraction >= 1 or isinstance(f.get("shape"), Message):
        draft.nullable = False
    elif fraction > 0:
        draft.max_null_fraction = round(1.0 - float(fraction), 12)
    if count >= 1:
        draft.min_count = int(count)
    if fraction <= 0 and count <= 0:
        draft.required = False


def _apply_environments(schema: _Schema, draft: ColumnDraft, f: Message, skip: _Skip) -> None:
    inside = [str(e) for e in f.all("in_environment")]
    outside = [str(e) for e in f.all("not_in_environment")]
    mentioned = set(schema.defaults) | set(inside) | set(outside)
    if "SERVING" in mentioned:
        draft.serving = ("SERVING" in inside or "SERVING" in schema.defaults) and \
            "SERVING" not in outside
    others = sorted(set(inside + outside) - {"SERVING", "TRAINING"})
    if others:
        skip("in_environment" if f.all("in_environment") else "not_in_environment",
             f"environment(s) {', '.join(others)}: buildenv knows training (every dataset) and "
             "serving (`serving:`)")


def _apply_comparator(into: dict[str, dict[str, float]], name: str, f: Message, skip: _Skip,
                      field: str, categorical: bool, integer: bool) -> bool:
    """A `drift_comparator` or `skew_comparator` as the column's thresholds under
    `monitoring.drift` / `monitoring.skew`; whether it compares anything."""
    comparator = f.get(field)
    if not isinstance(comparator, Message):
        return False
    thresholds: dict[str, float] = {}
    for field_name, key in (("infinity_norm", "linf"), ("jensen_shannon_divergence", "jsd")):
        sub = comparator.get(field_name)
        if not isinstance(sub, Message):
            continue
        part = f"{field}.{field_name}"
        value = _number(sub.get("threshold"))
        if value is None:
            skip(part, "has no threshold")
            continue
        if key == "linf" and not categorical:
            skip(part, "TFDV computes infinity_norm on categorical features only (string "
                 "values, or an int_domain with is_categorical) and ignores it here")
            continue
        try:
            DriftThreshold.model_validate({key: value})
        except ValidationError:
            skip(part, f"threshold {value} is outside buildenv's {key} range (0, 1]")
            continue
        thresholds[key] = value
        if key == "linf" and integer:
            skip(part, "buildenv compares integer columns over the training data's deciles, "
                 "not value by value as TFDV compares a categorical integer", True)
        if isinstance(sub.get("source"), Message):
            skip(f"{part}.source", "buildenv bins numeric columns by the locked version's "
                 "deciles", True)
    for field_name in comparator.names():
        if field_name not in ("infinity_norm", "jensen_shannon_divergence"):
            skip(f"{field}.{field_name}", "not a metric buildenv computes (it has linf, jsd, "
                 "psi and null_fraction)")
    if thresholds:
        into[name] = thresholds
    return bool(thresholds)


