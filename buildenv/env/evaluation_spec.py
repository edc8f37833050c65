"""The environment format's evaluation policy: evaluation rows and slices, label coverage, and
promotion gates (part of `buildenv.env.spec`, which re-exports every model here)."""

# Annotations not postponed: see `buildenv.env.spec_base`.
import itertools
import math
from typing import Annotated, Any, Literal, Self, Union

from pydantic import AllowInfNan, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from buildenv.env.spec_base import Scalar, Strict

__all__ = ["SLICE_PROBLEM_KEYS", "Coverage", "CoverageRule", "Evaluation", "Promotion", "Slice",
           "SliceCondition", "SliceGates", "class_key"]


class CoverageRule(Strict):
    """How many rows one class needs (an override of `label.coverage` for one class)."""

    min_count: Annotated[int, Field(ge=0)] | None = None
    """Rows of the class needed in the training rows and in the evaluation rows."""
    min_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of the rows (0..1) the class needs in the training rows and in the evaluation
    rows."""


class Coverage(Strict):
    """Whether the training data covers every class: each class needs `min_count` rows and a
    `min_fraction` share, in the training rows and in the evaluation rows, checked by
    `validate`, `build` and `retrain`; and how far a class's share may move between versions
    of the data before `drift` and `retrain` alert."""

    min_count: Annotated[int, Field(ge=0)] | None = None
    """Rows every class needs (in the training rows, and in the evaluation rows)."""
    min_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of the rows (0..1) every class needs."""
    classes: dict[str, CoverageRule] = {}
    """Per-class overrides, by class (as written in `label.classes` or the taxonomy; `true` and
    `false` for a bool label)."""
    per_slice: bool = False
    """Also check every class in every evaluation slice (`evaluation.slices`) with at least
    its `min_rows` rows."""
    severity: Literal["error", "warning"] = "error"
    """Whether a class below its rule fails the command (`error`) or is reported (`warning`)."""
    max_share_change: Annotated[float, Field(gt=0, le=1)] = 0.1
    """`drift` and `retrain` alert when a class's share of the rows moves by more than this
    (absolute, 0..1) between the locked data and the new data."""

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        # YAML reads `true:` and `1:` as bool and int keys; a class is named by its text
        if isinstance(value, dict):
            return {class_key(k): v for k, v in value.items()}
        return value

    def rule(self, name: str) -> tuple[int | None, float | None]:
        """(min_count, min_fraction) of the class named `name`."""
        own = self.classes.get(name)
        count = own.min_count if own is not None and own.min_count is not None \
            else self.min_count
        fraction = own.min_fraction if own is not None and own.min_fraction is not None \
            else self.min_fraction
        return count, fraction


def class_key(value: Any) -> str:
    """A class value as coverage rules and reports name it: `true`/`false` for bools, the
    number or string as written otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: A condition of a `where` predicate: (column, operator, value), as `ctx.read` filters take it.
SliceCondition = tuple[str, str, Union[Scalar, list[Scalar]]]


class Slice(Strict):
    """Evaluation slices: one per value of a column (`by`), one per bin of a numeric column
    (`by` + `bins`), or one named predicate (`name` + `where`). Every model is scored on each."""

    by: str | None = None
    """A column of the evaluation rows (served or not) that makes one slice per value, or per
    bin with `bins`."""
    bins: list[Annotated[float, AllowInfNan(True)]] | None = None
    """Strictly increasing edges binning a numeric `by` column: `[0, 500, 1500]` makes
    `[0, 500)` and `[500, 1500]`. Values outside the edges are in no slice; `.inf` and `-.inf`
    leave an end open."""
    where: list[SliceCondition] | list[list[SliceCondition]] | None = None
    """A predicate in the `ctx.read` filter syntax: `[[hour, ">=", 20]]` (every condition
    holds) or a list of such lists (any list holds)."""
    name: str | None = None
    """The name of a `where` slice, as reports and MLflow (`evaluation.<metric>.<name>`) show
    it."""
    min_rows: Annotated[int, Field(ge=1)] = 30
    """Slices with fewer evaluation rows are reported as too small and never gated."""

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.by is None) == (self.where is None):
            raise PydanticCustomError("bad_slice", "a slice takes either `by` (a column) or "
                                      "`where` (a predicate with a `name`)", {})
        if self.where is not None and not self.name:
            raise PydanticCustomError("bad_slice", "a `where` slice needs a `name`", {})
        if self.by is not None and self.name is not None:
            raise PydanticCustomError("bad_slice", "a `by` slice is named by its column and "
                                      "values; `name` is for `where` slices", {})
        if self.bins is not None:
            if self.by is None:
                raise PydanticCustomError("bad_bins", "`bins` needs `by` (the column to bin)",
                                          {})
            edges = self.bins
            if len(edges) < 2:
                raise PydanticCustomError("bad_bins", "bins take at least two edges", {})
            if any(math.isnan(e) for e in edges):
                raise PydanticCustomError("bad_bins", "bin edges cannot be NaN", {})
            for lo, hi in itertools.pairwise(edges):
                if lo == hi:
                    raise PydanticCustomError("bad_bins", "bin edge {edge} is listed twice",
                                              {"edge": f"{lo:g}"})
                if lo > hi:
                    raise PydanticCustomError("bad_bins", "bin edges must increase: {lo} comes "
                                              "before {hi}", {"lo": f"{lo:g}", "hi": f"{hi:g}"})
        return self

    def conditions(self) -> list[list[list[Any]]]:
        """`where` in disjunctive normal form: a list of lists of [column, op, value]."""
        if not self.where:
            return []
        where: list[Any] = list(self.where)
        groups = where if all(isinstance(c, list) for c in where) else [where]
        return [[list(c) for c in group] for group in groups]

    @property
    def columns(self) -> list[str]:
        if self.by is not None:
            return [self.by]
        return list(dict.fromkeys(str(c[0]) for g in self.conditions() for c in g))


#: Where a slice's cross-field problem (its error type) is located, when written.
SLICE_PROBLEM_KEYS = {"bad_bins": "bins"}


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
    `{movies: [movie_id], users: [user_id]}`; never the label column. Default: each dataset
    that shares column names with the label dataset is joined on them (the label's aside)
    where they are unique in it."""

    slices: list[Slice] = []
    """Slices every model is scored on, with a paired bootstrap interval per metric (see
    docs/evaluation.md)."""
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    """Coverage of the bootstrap intervals recorded for every metric, overall and per slice."""
    resamples: Annotated[int, Field(ge=100, le=100_000)] = 1000
    """Bootstrap resamples behind every interval."""
    seed: int = 0
    """Seed of the bootstrap: the same rows and models give the same intervals."""

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
    def _one_method(self) -> Self:
        if self.dataset is not None and (self.holdout is not None or self.key is not None):
            raise PydanticCustomError("evaluation", "evaluation takes either `dataset` or "
                                      "`holdout`/`key`, not both", {})
        return self

    @property
    def fraction(self) -> float:
        return self.holdout if self.holdout is not None else 0.2


class SliceGates(Strict):
    """Gates on the evaluation slices: no slice may regress, the slices may not spread apart."""

    max_regression: Annotated[float, Field(ge=0)] | None = None
    """Promotion fails when, on some slice, the candidate is worse than the champion by more
    than this with `confidence` (paired bootstrap on the same rows, Holm-corrected across
    slices)."""
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    """Confidence a slice regression must be established with before it fails promotion."""
    max_gap: Annotated[float, Field(ge=0)] | None = None
    """Largest allowed difference of the gate metric between the candidate's best and worst
    slice (slices with at least `min_rows` rows)."""


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
    slices: SliceGates | None = None
    """Gates per evaluation slice (`evaluation.slices`) on the gate metric."""
