"""The environment format (SPEC §2) as strict pydantic models.

These models are the single source of truth for what an environment file may
contain: they validate resolved environments, and `buildenv schema` renders
them as JSON Schema for editors. Every field carries a docstring, which feeds
that schema. Strict: unknown keys are errors, models are immutable.

Compatibility policy: `schema: 1` is the current format (absent means
current). Additive changes (new optional keys) keep the version; a change that
reinterprets or removes a key bumps it, and buildenv then accepts the previous
version through an upgrade function in `SCHEMA_UPGRADES` and refuses versions
newer than it knows (BE013).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["CURRENT_SCHEMA", "Column", "Dataset", "Dtype", "Environment", "Label", "Monitoring",
           "OnnxServing", "Privacy", "Promotion", "SklearnServing", "json_schema", "op_allowed"]

CURRENT_SCHEMA = 1
#: dict -> dict upgrades from an older schema version to the next one.
SCHEMA_UPGRADES: dict[int, Callable[[dict], dict]] = {}

Dtype = Literal[
    "int8", "int16", "int32", "int64", "float32", "float64", "bool", "string", "date", "timestamp"
]
INTEGER_DTYPES = ("int8", "int16", "int32", "int64")
NUMERIC_DTYPES = INTEGER_DTYPES + ("float32", "float64")
TEMPORAL_DTYPES = ("date", "timestamp")
Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Column(Strict):
    """One column of a dataset: its type, allowed values, and whether serving has it."""

    dtype: Dtype
    """Arrow-level type. Data stored with a narrower type of the same kind (int32 for int64,
    float32 for float64) is accepted; anything else is a violation."""
    nullable: bool = True
    """Whether nulls are allowed at all."""
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Upper bound on the fraction of null rows (0..1), for nullable columns."""
    domain: list[Scalar] | None = None
    """Allowed values (string, integer or bool columns). Values outside it are violations and
    drift alerts."""
    range: tuple[Scalar, Scalar] | None = None
    """Inclusive [min, max]: numbers for numeric dtypes, ISO 8601 strings for date/timestamp."""
    serving: bool = True
    """Whether production has this column at prediction time. `false` marks a training-only
    column (TFDV users know this as `not_in_environment: SERVING`): a model may not take it as
    input, though training may read it for labels, weights, filters or evaluation."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        if self.range is not None:
            lo, hi = self.range
            if self.dtype in NUMERIC_DTYPES:
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in (lo, hi)):
                    raise PydanticCustomError("bad_range", "range of a {dtype} column takes "
                                              "two numbers", {"dtype": self.dtype})
            elif self.dtype in TEMPORAL_DTYPES:
                try:
                    lo, hi = (_parse_temporal(v) for v in (lo, hi))
                except ValueError:
                    raise PydanticCustomError("bad_range", "range of a {dtype} column takes two "
                                              "ISO 8601 strings", {"dtype": self.dtype}) from None
            else:
                raise PydanticCustomError("bad_range", "a {dtype} column takes no range "
                                          "(use domain)", {"dtype": self.dtype})
            if lo > hi:
                raise PydanticCustomError("bad_range", "range [{lo}, {hi}] is empty: the first "
                                          "bound must not exceed the second",
                                          {"lo": str(self.range[0]), "hi": str(self.range[1])})
        if self.domain is not None:
            want: tuple[type, ...]
            if self.dtype == "string":
                want = (str,)
            elif self.dtype in INTEGER_DTYPES:
                want = (int,)
            elif self.dtype == "bool":
                want = (bool,)
            else:
                raise PydanticCustomError("bad_domain", "a {dtype} column takes no domain "
                                          "(use range)", {"dtype": self.dtype})
            for value in self.domain:
                ok = isinstance(value, want) and (self.dtype == "bool" or not isinstance(value, bool))
                if not ok:
                    raise PydanticCustomError("bad_domain", "domain value {value} is not a "
                                              "{dtype}", {"value": repr(value),
                                                          "dtype": self.dtype})
            if len(set(map(repr, self.domain))) != len(self.domain):
                raise PydanticCustomError("bad_domain", "domain lists a value twice", {})
        return self


def _parse_temporal(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class Dataset(Strict):
    """A dataset the training may read, pinned by content digest in the lock."""

    uri: str
    """Relative to the repository root, or file://, s3://, gs://."""
    format: Literal["parquet", "csv"] = "parquet"
    """Storage format."""
    columns: dict[str, Column]
    """Declared columns. Training code can read only these."""
    description: str | None = None
    """Free text for humans; not part of the environment digest."""

    @field_validator("columns")
    @classmethod
    def _non_empty(cls, value: dict[str, Column]) -> dict[str, Column]:
        if not value:
            raise PydanticCustomError("missing", "a dataset declares at least one column", {})
        return value


class Label(Strict):
    """What the model predicts."""

    dataset: str
    """Dataset that holds the label."""
    column: str
    """Label column; never a model input."""
    classes: list[Scalar] | None = None
    """Class values for classification; absent for regression."""


class SklearnServing(Strict):
    """Serving runs pickled scikit-learn models (MLflow's sklearn flavor)."""

    stack: Literal["sklearn"]
    """The serving runtime."""
    ops: list[str]
    """Allow-list of fully qualified classes the runtime can run; `fnmatch` globs such as
    `sklearn.linear_model.*`. Every class in the fitted model must match one."""
    requirements: list[str] = ["scikit-learn"]
    """Pinned requirements the serving image installs (pip specifiers). A model trained with a
    version outside them is refused."""


class OnnxServing(Strict):
    """Serving runs ONNX graphs with onnxruntime."""

    stack: Literal["onnx"]
    """The serving runtime."""
    opset: Annotated[int, Field(ge=7, le=23)]
    """Default-domain ONNX opset the runtime supports."""
    ops: list[str] = ["*"]
    """Allow-list of scikit-learn classes (globs) accepted before conversion."""
    requirements: list[str] = ["onnxruntime"]
    """Pinned requirements the serving image installs."""


Serving = Annotated[Union[SklearnServing, OnnxServing], Field(discriminator="stack")]


class DriftThreshold(Strict):
    """Drift thresholds; the meaning of `linf` and `jsd` matches TFDV's, so TFX thresholds carry
    over."""

    linf: Annotated[float, Field(gt=0, le=1)] | None = None
    """Categorical: largest absolute change of any value's frequency (L-infinity distance)."""
    jsd: Annotated[float, Field(gt=0, le=1)] | None = None
    """Jensen-Shannon divergence (log base 2) between the two distributions."""
    psi: Annotated[float, Field(gt=0)] | None = None
    """Numeric: population stability index over shared quantile bins."""
    null_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    """Largest allowed absolute change of the null fraction."""


class Drift(Strict):
    """Drift thresholds by column type, overridable per column."""

    categorical: DriftThreshold = DriftThreshold(linf=0.1)
    """Defaults for string and bool columns."""
    numeric: DriftThreshold = DriftThreshold(psi=0.2)
    """Defaults for numeric and temporal columns."""
    columns: dict[str, DriftThreshold] = {}
    """Per-column overrides, by column name."""


class Monitoring(Strict):
    """How drift is judged and which alerts matter."""

    drift: Drift = Drift()
    """Thresholds."""
    min_importance: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Alerts on features whose importance in every model using them is below this are
    suppressed (and counted)."""


class Privacy(Strict):
    """Which datasets never show a row to a human."""

    restricted: list[str] = []
    """Datasets whose row values never appear in output: aggregates and counts only."""
    min_group_size: Annotated[int, Field(ge=1)] = 10
    """Categories seen fewer times than this are merged into "(other)" in reports."""


class Evaluation(Strict):
    """The rows every model of this environment is scored on, chosen by the environment (not by
    the training): a fraction of the label dataset held out by a hash of a key, or a separately
    pinned dataset. `ctx.read` never returns them to the training."""

    holdout: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Fraction of the label dataset's rows held out for evaluation (default 0.2), chosen by a
    stable hash of `key`: the same key is held out in every version of the data."""
    key: list[str] | None = None
    """Columns of the label dataset whose values decide whether a row is held out: a stable id
    (e.g. `[user_id, movie_id]`). Default: every declared column but the label."""
    dataset: str | None = None
    """A separately pinned dataset of evaluation rows (declared under `datasets`, holding the
    label column), instead of a held-out fraction. Training code cannot read it."""
    join: dict[str, list[str]] = {}
    """How an evaluation row gets the served columns of other datasets: dataset -> the key
    column(s) it shares with the label dataset (unique in that dataset), e.g.
    `{movies: [movie_id], users: [user_id]}`."""

    @field_validator("key", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("join", mode="before")
    @classmethod
    def _one_join_key(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_method(self) -> Evaluation:
        if self.dataset is not None and (self.holdout is not None or self.key is not None):
            raise PydanticCustomError("evaluation", "evaluation takes either `dataset` or "
                                      "`holdout`/`key`, not both", {})
        return self

    @property
    def fraction(self) -> float:
        return self.holdout if self.holdout is not None else 0.2


class Promotion(Strict):
    """Gates a candidate must pass before it becomes `<env>-champion`."""

    metric: str
    """Metric logged by the training (`ctx.log_metric`) or computed on the holdout."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether larger is better."""
    min_value: float | None = None
    """Absolute bound the metric must reach (a minimum, or a maximum when minimizing)."""
    max_regression: Annotated[float, Field(ge=0)] | None = None
    """How much worse than the current champion the candidate may be, on the same holdout."""
    required_checks: list[Literal["validate", "drift", "verify"]] = ["validate", "verify"]
    """Checks that must have passed for this build."""


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

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              populate_by_name=True)

    # helpers used across stages -------------------------------------------------
    def column(self, dataset: str, column: str) -> Column | None:
        ds = self.datasets.get(dataset)
        return ds.columns.get(column) if ds else None

    def restricted(self, dataset: str) -> bool:
        return dataset in self.privacy.restricted

    def served_columns(self) -> dict[str, list[str]]:
        """column name -> datasets serving it."""
        out: dict[str, list[str]] = {}
        for ds_name, ds in self.datasets.items():
            for col_name, col in ds.columns.items():
                if col.serving:
                    out.setdefault(col_name, []).append(ds_name)
        return out


def op_allowed(class_path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(class_path, p) for p in patterns)


def json_schema() -> dict:
    schema = Environment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://buildenv.dev/schema/environment-1.json"
    schema["title"] = "buildenv environment"
    return schema


def file_json_schema() -> dict:
    """The schema of one environment *file*: complete, or a partial overlay when it `extends`.

    A child file holds only what it changes, so under `extends` every key is optional and
    `null` is allowed (it deletes the inherited key).
    """
    import copy

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
