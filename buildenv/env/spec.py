"""The environment format (SPEC §2) as strict pydantic models.

These models are the single source of truth for what an environment file may
contain: they validate resolved environments, and `buildenv schema` renders
them as JSON Schema for editors. Every field carries a docstring, which feeds
that schema. Strict: unknown keys are errors, models are immutable.

Compatibility policy: `schema: 1` is the current format (absent means
current). Additive changes (new optional keys) keep the version; a change that
reinterprets or removes a key bumps it. Versions this buildenv does not know
are refused (BE013). There has been no second version, so there is no upgrade
of an older one yet: the change that makes `schema: 2` brings the upgrade of
version 1 files with it, as `data.lock.lockfile.LOCK_UPGRADES` does for locks.
"""

# Annotations not postponed: see `buildenv.env.spec_base`.
import copy
from typing import Annotated, Any, Literal, Self, Union

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from buildenv.env.column_rules import (
    COLUMN_CHECKS,
    COLUMN_PROBLEM_KEYS,
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    NUMERIC_DTYPES,
    TEMPORAL_DTYPES,
    parse_temporal,
    pattern_problem,
)
from buildenv.env.evaluation_spec import (
    Coverage,
    CoverageRule,
    Evaluation,
    Promotion,
    Slice,
    SliceGates,
    class_key,
)
from buildenv.env.monitoring_spec import Drift, DriftThreshold, Monitoring, Skew, SkewThreshold
from buildenv.env.privacy_spec import PeekPolicy, Privacy, PrivacyUnit, Synthetic, SyntheticSource
from buildenv.env.serving_spec import (
    Limits,
    OnnxServing,
    Parity,
    Serving,
    SklearnServing,
    op_allowed,
)
from buildenv.env.sources import Aggregation, LabelFunctions, Transform
from buildenv.env.spec_base import Scalar, Strict, documented, without_required
from buildenv.env.spec_checks import dataset_columns_problem, dataset_uri_problem
from buildenv.env.uris import is_remote, names_directory

_parse_temporal = parse_temporal  # the name other rooms import

__all__ = ["COLUMN_PROBLEM_KEYS", "CURRENT_SCHEMA", "FLOAT_DTYPES", "INTEGER_DTYPES",
           "NUMERIC_DTYPES", "TABLE_FORMATS", "TEMPORAL_DTYPES", "Aggregation", "Catalog",
           "Column", "Coverage", "CoverageRule", "Dataset", "Drift", "DriftThreshold", "Dtype",
           "Environment", "Evaluation", "Label", "LabelFunctions", "LabelSet", "Limits",
           "Monitoring", "OnnxServing", "Parity", "PeekPolicy", "Privacy", "PrivacyUnit",
           "Promotion", "Reuse", "Scalar", "Skew", "SkewThreshold", "Slice", "SliceGates",
           "SklearnServing", "Strict", "Synthetic", "SyntheticSource", "Taxonomy", "Transform",
           "class_key", "json_schema", "op_allowed", "pattern_problem"]

CURRENT_SCHEMA = 1

Dtype = Literal[
    "int8", "int16", "int32", "int64", "float32", "float64", "bool", "string", "date", "timestamp"
]


class Column(Strict):
    """One column of a dataset: its type, allowed values, and whether serving has it."""

    dtype: Dtype
    """Arrow-level type. Data stored with a narrower type of the same kind (int32 for int64,
    float32 for float64) is accepted; anything else is a violation."""
    nullable: bool = True
    """Whether nulls are allowed at all."""
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Upper bound on the fraction of null rows (0..1), for nullable columns."""
    required: bool = True
    """Whether the data must have the column. `false`: data without it is valid and reads as
    all nulls (TFDV's feature without a `presence` constraint); data with it is checked as
    usual. In serving data, whether a served column may be absent."""
    min_count: Annotated[int, Field(ge=1)] | None = None
    """At least this many non-null values (TFDV's `presence.min_count`); fewer is an error.
    A column with a `min_count` is required."""
    domain: list[Scalar] | None = None
    """Allowed values (string, integer, float or bool columns). Values outside it are violations
    and drift alerts. Float values are compared in the stored precision. An empty list allows
    no value: every non-null value violates it (as TFDV's empty `string_domain` and Great
    Expectations' empty `value_set`)."""
    range: tuple[Scalar | None, Scalar | None] | None = None
    """Inclusive [min, max]: numbers for numeric dtypes, ISO 8601 strings for date/timestamp.
    `null` leaves that end open (`[0, null]`: at least 0); not both ends."""
    allow_nan: bool = True
    """Float columns: `false` makes every NaN value an error (TFDV's
    `float_domain.disallow_nan`). NaN is a value, not a null: `nullable` does not cover it."""
    max_violation_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Tolerance (0..1): the share of non-null values that may violate each of the column's
    range, domain, pattern, length and unique constraints before it is an error; up to it, a
    warning with the count (Great Expectations' `1 - mostly`, TFDV's `1 - min_domain_mass`).
    Absent: any violation is an error. Nulls never count (see nullable, max_null_fraction)."""
    unique: bool = False
    """A key: every non-null value occurs once; duplicated values are violations (counted as
    every row holding a duplicated value). Unique columns are not drift-monitored."""
    pattern: str | None = None
    """Regular expression (RE2 syntax, as pyarrow's compute engine runs it) searched anywhere
    in each string value; anchor it with `^...$` to match the whole value."""
    length: tuple[Annotated[int, Field(ge=0)] | None, Annotated[int, Field(ge=0)] | None] | None \
        = None
    """Inclusive [min, max] length of string values in characters (Unicode code points); `null`
    leaves that end open."""
    monitor: bool = True
    """Whether `buildenv drift` compares this column's distribution (`false` for identifiers,
    free text and other columns whose distribution means nothing). It is still validated."""
    serving: bool = True
    """Whether production has this column at prediction time. `false` marks a training-only
    column (TFDV users know this as `not_in_environment: SERVING`): a model may not take it as
    input, though training may read it for labels, weights, filters or evaluation."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # every cross-field problem of the column at once, each located at its own key
        problems = [PydanticCustomError(*problem) for check in COLUMN_CHECKS
                    if (problem := check(self)) is not None]
        if problems:
            raise ValidationError.from_exception_data(
                "Column", [InitErrorDetails(type=p, loc=(), input=self.model_dump())
                           for p in problems])
        return self

    def constraints(self) -> list[str]:
        """The value constraints `max_violation_fraction` applies to, as declared."""
        return [key for key in ("range", "domain", "pattern", "length")
                if getattr(self, key) is not None] + (["unique"] if self.unique else [])



#: Column keys added to schema 1 after its first release. `show` and `diff` omit them at their
#: default (as the digest leaves out every default), so environments that do not use them look
#: and hash as before.
ADDED_COLUMN_KEYS: dict[str, Any] = {"max_violation_fraction": None, "unique": False,
                                     "pattern": None, "length": None, "monitor": True,
                                     "required": True, "min_count": None, "allow_nan": True}


#: Section keys added to schema 1 after its first release (evaluation slices and intervals, the
#: release of restricted figures): omitted at their default by `show` and `diff`, as above.
ADDED_SECTION_KEYS: dict[str, dict[str, Any]] = {
    "evaluation": {"slices": [], "confidence": 0.95, "resamples": 1000, "seed": 0},
    "privacy": {"release": "exact", "release_epsilon": 1.0},
}


def omit_added_section_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """A dumped environment without the keys of `ADDED_SECTION_KEYS` that hold their default."""
    for section, keys in ADDED_SECTION_KEYS.items():
        found = document.get(section)
        if isinstance(found, dict):
            for key, default in keys.items():
                if key in found and found[key] == default and type(found[key]) is type(default):
                    del found[key]
    return document


def omit_added_defaults(column: dict[str, Any]) -> dict[str, Any]:
    """A dumped column without the keys of `ADDED_COLUMN_KEYS` that hold their default."""
    for key, default in ADDED_COLUMN_KEYS.items():
        if key in column and column[key] == default and type(column[key]) is type(default):
            del column[key]
    return column


#: Formats that are tables with their own history: a version of one is pinned by the lock as a
#: manifest of its data files (buildenv.data.tables).
TABLE_FORMATS = ("delta", "iceberg")


class Catalog(Strict):
    """Where an Iceberg table is registered (PyIceberg's SQL or REST catalog)."""

    type: Literal["sql", "rest"]
    """`sql`: a SQLAlchemy URL (SQLite or PostgreSQL); `rest`: an Iceberg REST catalog."""
    uri: str
    """`sqlite:///path.db` (relative paths resolve against the repository root),
    `postgresql+psycopg2://...`, or the REST endpoint `https://...`."""
    name: str = "default"
    """The catalog's name: PyIceberg also reads its properties from the variables
    `PYICEBERG_CATALOG__<NAME>__<PROPERTY>` (credentials belong there, not in this file)."""
    warehouse: str | None = None
    """The warehouse location (REST catalogs may require it)."""
    properties: dict[str, str] = {}
    """More catalog properties, passed to PyIceberg as written (`s3.endpoint`, `prefix`, ...)."""
    timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds a catalog call may take before buildenv gives up on it (BE073)."""


class Dataset(Strict):
    """A dataset the training may read, pinned by content digest in the lock."""

    uri: str
    """Relative to the repository root, or file://, s3://, gs://. A uri ending in `/` names a
    directory (or bucket prefix) of Parquet files: a partitioned dataset, pinned file by file.
    `format: delta`: the table's root directory; `format: iceberg`: the table's identifier in
    its catalog (`namespace.table`)."""
    format: Literal["parquet", "csv", "delta", "iceberg"] = "parquet"
    """Storage format: a file (`parquet`, `csv`), or a table with its own history (`delta`,
    `iceberg`; needs the `tables` extra to lock)."""
    version: Annotated[int, Field(ge=0)] | None = None
    """Delta: the table version to pin. Absent (and no `as_of`): the latest commit, followed
    by `buildenv lock` and `buildenv retrain`."""
    as_of: str | None = None
    """Delta: pin the latest version committed at or before this ISO 8601 time."""
    catalog: Catalog | None = None
    """Iceberg: the catalog the table is registered in."""
    ref: str | None = None
    """Iceberg: the branch or tag to follow (absent: `main`)."""
    snapshot: int | None = None
    """Iceberg: the snapshot id to pin, instead of following a ref."""
    keep: bool | None = None
    """Keep the bytes of every pinned version in the object store. Default: `true` for local
    files and directories, `false` for objects in an object store and for tables (which keep
    their own copies and history)."""
    dvc: str | None = None
    """Path of a `.dvc` file that pins this dataset's bytes: they are fetched from the DVC
    cache or remote (needs the `tables` extra), whatever is at `uri`."""
    columns: dict[str, Column]
    """Declared columns. Training code can read only these."""
    partitions: list[str] | None = None
    """Hive partition columns of a partitioned dataset, in path order: `[date]` reads
    `date=2026-09-01/part-0.parquet`. Each is a declared column; its values come from the paths
    and are validated like any other column's. Absent: the declared columns that name
    `name=<value>` directories in the paths (`buildenv.data.lock.manifest.infer_partitions`);
    `[]`: none."""
    undeclared_columns: Literal["error", "warn", "ignore"] = "ignore"
    """What a column the data has but `columns` does not declare is: an `error` (TFDV's
    SCHEMA_NEW_COLUMN), a warning (`warn`), or nothing (`ignore`: such columns are never read).
    For serving data, the strictest setting of the datasets it is checked against applies."""
    source: Transform | None = None
    """Instead of a `uri`: the dataset is computed by a transform from other datasets (a
    derived dataset, docs/derived.md), written under `.buildenv/derived/`, partitioned like its
    first input, and pinned by the digests of its code and inputs."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=without_required("uri"))

    @model_validator(mode="before")
    @classmethod
    def _derived_has_no_uri(cls, data: Any) -> Any:
        # a derived dataset's uri is where buildenv writes it: the resolver fills it in
        if isinstance(data, dict) and data.get("source") is not None and "uri" not in data:
            return {**data, "uri": ""}
        return data

    @model_validator(mode="after")
    def _uri_or_source(self) -> Self:
        problem = dataset_uri_problem(self.uri, self.source, self.format)
        if problem == "missing":
            raise ValidationError.from_exception_data("Dataset", [InitErrorDetails(
                type="missing", loc=("uri",), input=self.model_dump())])
        if problem == "derived":
            raise PydanticCustomError("derived", "a derived dataset is written as Parquet: "
                                      "drop `format`", {})
        return self

    @property
    def partitioned(self) -> bool:
        """Whether `uri` names a directory or prefix of files rather than one file."""
        return names_directory(self.uri) and not self.is_table

    @property
    def is_table(self) -> bool:
        """A Delta or Iceberg table: pinned by version or snapshot, read as its data files."""
        return self.format in TABLE_FORMATS

    @property
    def keeps(self) -> bool:
        """Whether `buildenv lock` keeps the pinned bytes in the object store: `keep`, else
        local files and directories (an object store and a table keep their own copies)."""
        return self.keep if self.keep is not None else not (self.is_table or is_remote(self.uri))

    @property
    def partition_columns(self) -> list[str]:
        """The partitions as written (those found in the paths are the manifest's)."""
        return list(self.partitions or [])

    @field_validator("columns")
    @classmethod
    def _non_empty(cls, value: dict[str, Column]) -> dict[str, Column]:
        if dataset_columns_problem(value) is not None:
            raise PydanticCustomError("missing", "a dataset declares at least one column", {})
        return value


class Label(Strict):
    """What the model predicts: a column of a dataset (`dataset` + `column`), or a label set
    (`labels`). Switching form in a child replaces the inherited label as a whole."""

    dataset: str | None = None
    """Dataset that holds the label column."""
    column: str | None = None
    """Label column; never a model input."""
    classes: list[Scalar] | None = None
    """Class values for classification; absent for regression. A label set's classes are its
    taxonomy's."""
    labels: str | None = None
    """A label set declared under `labels:` that the label comes from instead of a column:
    `ctx.read` of its dataset returns only rows with a usable label, `ctx.labels()` the aligned
    labels."""
    coverage: Coverage | None = None
    """Rows every class needs in the training and evaluation rows, and how far a class's share
    may move before drift alerts (absent: not checked)."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.labels is not None:
            if self.dataset is not None or self.column is not None or self.classes is not None:
                raise PydanticCustomError(
                    "label_source", "label takes either `labels` (a label set) or `dataset` and "
                    "`column`, not both (a label set's classes are its taxonomy's)", {})
        elif self.dataset is None or self.column is None:
            raise PydanticCustomError(
                "label_source", "label needs `dataset` and `column`, or `labels` (a label set)",
                {})
        return self


class Taxonomy(Strict):
    """The classes a label set may hold, with a name and a version (taxonomies change)."""

    name: str
    """What is classified (`genre`): names the labels in reports, lineage and signatures."""
    version: Union[int, str]
    """The taxonomy's version; recorded in the lock and the lineage."""
    classes: list[str]
    """Every class a label may take; anything else in an export is an error (BE856)."""

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if not value:
            raise PydanticCustomError("label_source", "a taxonomy declares at least one class",
                                      {})
        if len(set(value)) != len(value):
            raise PydanticCustomError("label_source", "taxonomy lists a class twice", {})
        return value


class Reuse(Strict):
    """An older label set whose labels are mapped into this set's taxonomy."""

    labels: str
    """The reused label set (declared under `labels:`)."""
    mapping: str | None = None
    """SSSOM TSV file mapping the reused set's classes (`subject_id`) to this taxonomy's
    (`object_id`). Absent: every reused class must be a class of this taxonomy (a relabel
    overlay of the same taxonomy)."""
    ambiguous: Literal["skip", "refuse"] = "skip"
    """What to do with reused examples whose class cannot be mapped automatically (split by
    `narrowMatch`, several targets, `closeMatch`, no mapping row): `skip` them (they need
    relabeling; a warning counts them per class) or `refuse` the build."""


class LabelSet(Strict):
    """Annotations pinned like data: an export of an annotation tool, its taxonomy and the
    annotation UI version that produced it."""

    uri: str
    """The export: relative to the repository root, or file://, s3://, gs://."""
    format: Literal["label-studio", "parquet"] = "label-studio"
    """A Label Studio JSON export, or Parquet (`key`, `label`, `annotator`, `ui_version`,
    `taxonomy_version`, `created_at`)."""
    dataset: str
    """The dataset whose examples are labeled."""
    key: str
    """The dataset column (integer or string) that identifies an example; Label Studio tasks
    carry it in `data`."""
    field: str | None = None
    """Label Studio `from_name` of the choices control holding the label."""
    taxonomy: Taxonomy
    """The classes, with the taxonomy's name and version."""
    ui_version: str | None = None
    """The annotation UI/guidelines version that produced these annotations (Label Studio
    exports do not record it). Parquet rows carry their own."""
    reuse: list[Reuse] = []
    """Older label sets mapped into this taxonomy; this set's own annotations win for the keys
    it annotates, then the reused sets in the order listed."""
    exposure: Literal["exclusive", "allow"] = "exclusive"
    """`exclusive`: an annotator who labeled the same example under two UI versions (in any
    label set of the multiverse) is an error; `allow` reports it as a warning."""
    source: LabelFunctions | None = None
    """Instead of a `uri`: the labels are computed by labeling functions over `dataset`
    (docs/labels.md), written under `.buildenv/labels/` in the Parquet form, and pinned by the
    digests of the functions and the data."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=without_required("uri"))

    @model_validator(mode="before")
    @classmethod
    def _computed_has_no_uri(cls, data: Any) -> Any:
        # computed labels are written by buildenv in the Parquet form: the resolver fills the uri
        if isinstance(data, dict) and data.get("source") is not None:
            if data.get("format", "parquet") != "parquet":
                raise PydanticCustomError("label_source", "a label set computed by labeling "
                                          "functions has no export format: drop `format`", {})
            return {"uri": "", **data, "format": "parquet"}
        return data

    @model_validator(mode="after")
    def _uri_or_source(self) -> Self:
        if self.source is None and not self.uri:
            raise ValidationError.from_exception_data("LabelSet", [InitErrorDetails(
                type="missing", loc=("uri",), input=self.model_dump())])
        return self


class Environment(Strict):
    """An ML build environment: what training code is compiled against."""

    schema_: Literal[1] | None = Field(default=None, alias="schema")
    """Format version; absent means the current one (1)."""
    name: str
    """Must equal the file stem: environments/<name>.yaml."""
    extends: str | None = None
    """Parent environment: this file is a copy-on-write branch of it."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""
    datasets: dict[str, Dataset]
    """The datasets training may read."""
    labels: dict[str, LabelSet] = {}
    """Label sets: annotation exports pinned in the lock like datasets."""
    label: Label | None = None
    """The prediction target."""
    serving: Serving | None = None
    """The serving stack the compiled model must run on."""
    monitoring: Monitoring = Monitoring()
    """Drift thresholds and alert triage."""
    privacy: Privacy = Privacy()
    """Row-level privacy policy."""
    evaluation: Evaluation = Evaluation()
    """Which rows every model is scored on (default: 20% of the label dataset, by a hash of
    the row without its label)."""
    promotion: Promotion | None = None
    """Promotion gates."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=documented, populate_by_name=True)

    # helpers used across stages -------------------------------------------------
    def column(self, dataset: str, column: str) -> Column | None:
        ds = self.datasets.get(dataset)
        return ds.columns.get(column) if ds else None

    def restricted(self, dataset: str, _seen: frozenset[str] = frozenset()) -> bool:
        """Declared restricted, or derived from a restricted input by a transform that is
        not an aggregation."""
        if dataset in self.privacy.restricted:
            return True
        ds = self.datasets.get(dataset)
        if ds is None or ds.source is None or ds.source.aggregation is not None \
                or dataset in _seen:
            return False
        return any(self.restricted(i, _seen | {dataset}) for i in ds.source.inputs)

    def computed_over_restricted(self, label_set: str, _seen: frozenset[str] = frozenset()
                                 ) -> str | None:
        """The label set computed by labeling functions over restricted data that `label_set`
        is, or reuses: its exact counts answer "did this row pass my function?" for whoever
        wrote the functions, so they are withheld wherever they would show (lock, `labels`,
        lineage, `drift`). None when there is none."""
        spec = self.labels.get(label_set)
        if spec is None or label_set in _seen:
            return None
        if spec.source is not None and self.restricted(spec.dataset):
            return label_set
        for reused in spec.reuse:
            found = self.computed_over_restricted(reused.labels, _seen | {label_set})
            if found is not None:
                return found
        return None

    def label_set(self) -> LabelSet | None:
        """The label set the label comes from (None for a column label, or no label)."""
        if self.label is None or self.label.labels is None:
            return None
        return self.labels.get(self.label.labels)

    def label_dataset(self) -> str | None:
        """The dataset whose rows are the training examples: the label column's, or the one
        the label set labels."""
        if self.label is None:
            return None
        found = self.label_set()
        return found.dataset if found is not None else self.label.dataset

    def label_classes(self) -> list[Any] | None:
        found = self.label_set()
        if found is not None:
            return list(found.taxonomy.classes)
        return self.label.classes if self.label is not None else None

    def served_columns(self) -> dict[str, list[str]]:
        """column name -> datasets serving it."""
        out: dict[str, list[str]] = {}
        for ds_name, ds in self.datasets.items():
            for col_name, col in ds.columns.items():
                if col.serving:
                    out.setdefault(col_name, []).append(ds_name)
        return out


def json_schema() -> dict[str, Any]:
    schema = Environment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://buildenv.dev/schema/environment-1.json"
    schema["title"] = "buildenv environment"
    return schema


def file_json_schema() -> dict[str, Any]:
    """The schema of one environment *file*: complete, or a partial overlay when it `extends`.

    A child file holds only what it changes, so under `extends` every key is optional and
    `null` is allowed (it deletes the inherited key).
    """
    full = json_schema()
    defs = full.pop("$defs", {})
    partial_defs = {f"{k}Partial": _partial(copy.deepcopy(v)) for k, v in defs.items()}
    partial_root = _partial(copy.deepcopy({k: v for k, v in full.items()
                                           if k in ("properties", "type", "additionalProperties",
                                                    "description")}))
    partial_root["required"] = ["name", "extends"]
    props = partial_root["properties"]
    props["name"] = full["properties"]["name"]
    props["extends"] = {"type": "string", "description": "Parent environment."}
    full_root = {k: v for k, v in full.items() if k in ("properties", "required", "type",
                                                           "additionalProperties")}
    return {
        "$schema": full["$schema"],
        "$id": full["$id"],
        "title": full["title"],
        "description": full.get("description", ""),
        "if": {"required": ["extends"],
               "properties": {"extends": {"type": "string"}}},
        "then": partial_root,
        "else": full_root,
        "$defs": {**defs, **partial_defs},
    }


def _partial(node: Any) -> Any:
    """Rewrite a schema node: no required keys, null allowed, refs to the Partial defs."""
    if isinstance(node, dict):
        node.pop("required", None)
        node.pop("discriminator", None)
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        out = {}
        for key, value in node.items():
            if key == "$ref":
                out[key] = value + "Partial"
            elif key == "properties":
                out[key] = {k: {"anyOf": [_partial(v), {"type": "null"}]}
                            for k, v in value.items()}
            elif key == "additionalProperties" and isinstance(value, dict):
                # entries of a mapping (datasets, columns, drift.columns) can be deleted too
                out[key] = {"anyOf": [_partial(value), {"type": "null"}]}
            else:
                out[key] = _partial(value)
        return out
    if isinstance(node, list):
        return [_partial(v) for v in node]
    return node
