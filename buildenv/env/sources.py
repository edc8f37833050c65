"""Data and labels made by code: a derived dataset's `source` (a transform over other datasets)
and a label set's `source` (labeling functions over its dataset). Part of the environment
format (`buildenv.env.spec` uses these models); what they become is pinned by the lock like
any data (`buildenv.data.lock.derived`, `buildenv.labels.weak`).

A derived or computed source has no `uri` in the file: its output is written under the
repository's state directory (`derived_uri`, `weak_labels_uri`), which the resolver fills in
so every reader finds it like any dataset or label export.
"""

# Annotations not postponed: see `buildenv.env.spec_base`.
from typing import Annotated, Literal

from pydantic import Field, field_validator

from buildenv.env.spec_base import Strict

__all__ = ["ENTRY_PATTERN", "Aggregation", "LabelFunctions", "Transform", "derived_uri",
           "relative_globs", "weak_labels_uri"]

#: `path/to/module.py:function`, relative to the repository root (as a training's `entry`).
ENTRY_PATTERN = r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$"


class Aggregation(Strict):
    """The transform aggregates rows into groups: every output row counts the input rows it
    summarises, and rows of fewer than `min_group_size` are withheld, so an aggregate of
    restricted data is not itself restricted."""

    count: str
    """Output column (integer) holding the number of input rows each output row summarises."""
    min_group_size: Annotated[int, Field(ge=1)] | None = None
    """Output rows counting fewer input rows are dropped (and counted). Default and minimum:
    the environment's `privacy.min_group_size`."""


class Transform(Strict):
    """A dataset computed by code from other datasets of the environment, rebuilt per input
    file and pinned by the digests of its code and inputs."""

    transform: Annotated[str, Field(pattern=ENTRY_PATTERN)]
    """`path/to/module.py:function`: `def function(ctx)` returns (or yields) pandas DataFrames
    or Arrow record batches of the declared columns."""
    inputs: Annotated[list[str], Field(min_length=1)]
    """Datasets it reads. It is called once per file of the first (once in all when that is a
    single file), whose `ctx.read`/`ctx.scan` return that file's rows; the others are read
    whole. The output is partitioned like the first input."""
    aggregation: Aggregation | None = None
    """Declare the transform an aggregation: its output is not restricted even when an input
    is (without it, a restricted input makes the output restricted)."""
    timeout: Annotated[float, Field(gt=0)] = 3600.0
    """Seconds one build of the dataset may run before it is stopped."""
    processes: Annotated[int, Field(ge=1)] | None = None
    """Sandboxed processes that may run the transform at once over many stale files (each
    holds its own copy of what the transform keeps in memory). Default: as many as the
    cores the build may use; 1: one process, in order."""
    files: list[str] = Field(default_factory=list)
    """Repository files the transform reads that the build does not see it open (native code
    opening a path, a directory listing): globs relative to the root (`**` for any depth),
    each matching at least one file. Their digests are part of its code's."""

    @field_validator("inputs")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("inputs lists a dataset twice")
        return value

    @field_validator("files")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        return relative_globs(value)

    @property
    def module_path(self) -> str:
        return self.transform.rsplit(":", 1)[0]

    @property
    def function(self) -> str:
        return self.transform.rsplit(":", 1)[1]


class LabelFunctions(Strict):
    """Labels computed by labeling functions: small vectorised rules over the label set's
    dataset that each vote for a class or abstain, combined by a label model."""

    functions: Annotated[str, Field(pattern=r"^[^:]+\.py$")]
    """The module (repository-relative path) defining functions decorated
    `@buildenv.labeling_function(columns=[...])`."""
    model: Literal["majority", "generative"] = "majority"
    """How votes become one label: `majority` (ties abstain) or `generative` (a Dawid-Skene
    model fitted by EM, see docs/labels.md)."""
    gold: str | None = None
    """An annotated label set of the same examples and taxonomy: the generative model's class
    prior, and the functions' empirical accuracy in `buildenv labels`."""
    min_coverage: Annotated[float, Field(ge=0, le=1)] | None = None
    """Fail when fewer than this share (0..1) of the dataset's rows get a label."""
    max_conflict: Annotated[float, Field(ge=0, le=1)] | None = None
    """Fail when more than this share (0..1) of the rows get votes for two or more classes."""
    max_iterations: Annotated[int, Field(ge=1, le=10_000)] = 100
    """`generative`: EM iterations at most."""
    tolerance: Annotated[float, Field(gt=0)] = 1e-6
    """`generative`: EM stops when no parameter moves by more than this."""
    timeout: Annotated[float, Field(gt=0)] = 3600.0
    """Seconds applying the functions may run before it is stopped."""
    files: list[str] = Field(default_factory=list)
    """Repository files the functions read that the build does not see them open: globs
    relative to the root, as a transform's `files`."""

    @field_validator("files")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        return relative_globs(value)


def relative_globs(value: list[str]) -> list[str]:
    """`files` of a source: repository-relative globs, each once, none leaving the root."""
    for pattern in value:
        parts = pattern.replace("\\", "/").split("/")
        if not pattern.strip() or pattern.startswith(("/", "~")) or ".." in parts:
            raise ValueError(f"'{pattern}' is not a glob relative to the repository root")
    if len(set(value)) != len(value):
        raise ValueError("files lists a glob twice")
    return value


def derived_uri(state_dir: str, environment: str, dataset: str, partitioned: bool) -> str:
    """Where a derived dataset's output lives: a directory when its first input is one."""
    base = f"{state_dir.rstrip('/')}/derived/{environment}/{dataset}"
    return base + "/" if partitioned else base + ".parquet"


def weak_labels_uri(state_dir: str, environment: str, label_set: str) -> str:
    """Where a label set computed by labeling functions is written (the Parquet label form)."""
    return f"{state_dir.rstrip('/')}/labels/{environment}/{label_set}.parquet"
