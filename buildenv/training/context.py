"""`ctx`: the training's only view of data and of the build (SPEC §4).

`ctx.read` returns exactly the asked columns of declared datasets, read through the data gate:
verified against the lock's digests (bytes that changed after the lock check stop the build,
even if the training catches the error), typed by the environment, audited for restricted
datasets. Rows the environment holds out for evaluation are dropped from the label dataset
before the training sees them, and the evaluation dataset (if any) cannot be read at all.
When the label comes from a label set, `ctx.read` of its dataset returns only the rows with a
usable label (in file order) and `ctx.labels()` their labels, aligned row for row.
Anything else raises `ForbiddenRead`, which the runner reports as BE303 at the user's line.
Metrics and params go back to the build.

The pre-check (`precheck`, on by default) runs the training once before the full fit with
`sample_rows` set: `ctx.read` (and `ctx.scan`, `ctx.labels()`) then serve an evenly spaced
sample of the training rows of the label dataset (of every dataset when there is no label),
read and verified in full; the tables read are kept and served again, without a second read,
to the full run that follows (`begin_full_run`).

`ctx.scan` yields the same rows in batches, with memory bounded by the batch size, for
trainings that learn incrementally (`partial_fit`) from data larger than memory. Each file is
verified when its last batch has been read; a mismatch fails the build even if the training
catches it, and a scan the training abandons is verified (to the end of its current file)
when the training returns. Both take `filters` (buildenv.data.gate.filters): on a partitioned
dataset, files whose partition values rule them out are never opened. (A label set's dataset
is read whole: `ctx.labels()` is aligned with `ctx.read`'s rows.)
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.evaluation import holdout_mask, key_columns, labeled_rows
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.filters import Filters, parse_filters
from buildenv.data.gate.gate import Gate
from buildenv.data.gate.partitioned_read import PartitionedRead
from buildenv.data.gate.privacy import Redactor
from buildenv.data.lock.manifest import Manifest

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment

__all__ = ["BuildContext", "ForbiddenRead"]

_REDACTOR_LIMIT = 2_000_000  # distinct restricted strings kept for redaction


class ForbiddenRead(Exception):
    """The training asked for data the environment does not declare."""


class BuildContext:
    def __init__(self, env: Environment, seed: int, project: Project,
                 pins: dict[str, str] | None = None, label_pins: dict[str, dict] | None = None,
                 manifests: dict[str, Manifest] | None = None, purpose: str = "build"):
        self.env = env
        """The resolved environment."""
        self.seed = seed
        """The build seed; use it for every random_state."""
        self._project = project
        self._gate = Gate(project, env, purpose, pins=pins or {}, manifests=manifests or {})
        self._scans: list[Any] = []  # generators not yet run to the end
        self.metrics: dict[str, float] = {}
        self.params: dict[str, str] = {}
        self.reads: dict[str, list[str]] = {}
        self.gate_errors: list[GateError] = []
        """Reads the gate refused; the build fails on them even if the training caught them."""
        self.restricted_reads: set[str] = set()
        self.redactor = Redactor()
        self.redaction_complete = True
        self.deprecated_holdout = False
        self._label_pins = label_pins or {}
        self._label_rows: tuple[Any, Any] | None = None  # (row mask, labels of kept rows)
        self.label_sets: Any = None  # buildenv.labels.labelset.LabelSets, once labels are read
        self.sample_rows: int | None = None
        """Set during the pre-check: reads serve at most this many training rows."""
        self.read_sites: dict[str, str] = {}
        """column -> `path:line` of the first read of it in the training's code."""
        self._kept: dict[tuple, pa.Table] = {}  # tables the pre-check read, for the full run

    def begin_full_run(self) -> None:
        """After the pre-check: full reads again, and nothing the sample run logged."""
        self.sample_rows = None
        self.metrics, self.params, self.reads, self.read_sites = {}, {}, {}, {}
        self.deprecated_holdout = False

    def finish_full_run(self) -> None:
        self._kept.clear()

    def _sampled(self, dataset: str) -> bool:
        if self.sample_rows is None:
            return False
        label = self.env.label_dataset()
        return label is None or dataset == label

    def _sample(self, rows: int) -> np.ndarray:
        assert self.sample_rows is not None
        if rows <= self.sample_rows:
            return np.arange(rows)
        return (np.arange(self.sample_rows, dtype=np.int64) * rows) // self.sample_rows

    def _keep(self, key: tuple, read: Any) -> pa.Table:
        """The table for `key`: read now, or the one the pre-check read (once)."""
        if self.sample_rows is None and key in self._kept:
            return self._kept.pop(key)
        table = read()
        if self.sample_rows is not None:
            self._kept[key] = table
        return table

    def read(self, dataset: str, columns: list[str] | None = None,
             format: Literal["pandas", "arrow"] = "pandas", filters: Any = None):
        """Training rows of a declared dataset: a pandas DataFrame, or a pyarrow Table.
        `filters`: `[(column, op, value), ...]` (or a list of such lists, any of which may
        hold), as pandas and pyarrow take them."""
        wanted, rule = self._request(dataset, columns, format, filters)
        key = (dataset, tuple(wanted), repr(filters))
        if self.env.label_set() is not None and dataset == self.env.label_dataset():
            keep, _ = self._labeled_rows()
            table = self._keep(key, lambda: self._whole(dataset, wanted, None).filter(
                pa.array(keep)))
        else:
            split = self._split_keys(dataset)
            extra = [c for c in (rule.columns if rule else []) if c not in wanted]
            table = self._keep(key, lambda: self._training_rows(
                dataset, self._whole(dataset, list(dict.fromkeys(wanted + split + extra)),
                                     rule), split, rule, wanted))
        if self._sampled(dataset):
            table = table.take(pa.array(self._sample(table.num_rows)))
        if self.env.restricted(dataset):
            self.restricted_reads.add(dataset)
            self._remember_strings(table)
        return table if format == "arrow" else table.to_pandas()

    def _whole(self, dataset: str, columns: list[str], rule: Filters | None) -> pa.Table:
        try:
            with self._gate.open(dataset, filters=rule) as read:
                return read.table(columns)
        except GateError as exc:
            self.gate_errors.append(exc)
            raise

    def scan(self, dataset: str, columns: list[str] | None = None, *, batch_rows: int = 65_536,
             format: Literal["pandas", "arrow"] = "pandas", filters: Any = None):
        """Training rows of a declared dataset in batches of at most `batch_rows` rows
        (pandas DataFrames, or pyarrow RecordBatches): the same rows `read` returns, in the
        same order, with memory bounded by the batch size. Each file is verified once its
        last batch is read."""
        wanted, rule = self._request(dataset, columns, format, filters)
        if self.env.label_set() is not None and dataset == self.env.label_dataset():
            raise ForbiddenRead(f"dataset '{dataset}' takes its labels from a label set: read "
                                "it with ctx.read, whose rows ctx.labels() is aligned with")
        if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
            raise ValueError("batch_rows must be a positive integer")
        scan = self._scan(dataset, wanted, rule, batch_rows, format)
        self._scans.append(scan)
        return scan

    def _scan(self, dataset: str, wanted: list[str], rule: Filters | None, batch_rows: int,
              format: str):
        split = self._split_keys(dataset)
        extra = [c for c in (rule.columns if rule else []) if c not in wanted]
        restricted = self.env.restricted(dataset)
        if restricted:
            self.restricted_reads.add(dataset)
        try:
            read = self._gate.open(dataset, filters=rule)
        except GateError as exc:
            self.gate_errors.append(exc)
            raise
        names = list(dict.fromkeys(wanted + split + extra))
        # A scan may stop early: its files are read one at a time, so the file it stopped in
        # is known (`current`) and verified to its end; nothing is read ahead of the consumer.
        batches = read.batches(names, batch_rows=batch_rows, typed=True, ahead=False) \
            if isinstance(read, PartitionedRead) else \
            read.batches(names, batch_rows=batch_rows, typed=True)
        finished = False
        budget = self.sample_rows if self._sampled(dataset) else None
        try:
            for batch in batches:
                if budget is not None and budget <= 0:
                    return  # the pre-check's sample: the rest of the file is still verified
                table = self._training_rows(dataset, pa.Table.from_batches([batch]), split,
                                            rule, wanted)
                if restricted:
                    self._remember_strings(table)
                if budget is not None:
                    table = table.slice(0, budget)
                    budget -= table.num_rows
                if table.num_rows:
                    chunk = table.combine_chunks().to_batches()[0]
                    yield chunk if format == "arrow" else chunk.to_pandas()
            finished = True
        except GateError as exc:
            self.gate_errors.append(exc)
            raise
        finally:
            if not finished:
                self._verify_abandoned(read)
            batches.close()  # a generator: closing it ends the read's batches now
            read.close()

    def _verify_abandoned(self, read: Any) -> None:
        """A scan stopped early handed out rows of a file it had not finished: that file's
        bytes are verified anyway (its hash runs to the end independently of the decoder)."""
        current = getattr(read, "current", read)
        if current is None or current.digest is not None:
            return
        try:
            current.verify()
        except GateError as exc:
            self.gate_errors.append(exc)

    def finish(self) -> None:
        """Close scans the training left open (verifying what they handed out)."""
        while self._scans:
            self._scans.pop().close()

    def _request(self, dataset: str, columns: Any, format: str, filters: Any
                 ) -> tuple[list[str], Filters | None]:
        ds = self.env.datasets.get(dataset)
        if ds is None:
            raise ForbiddenRead(f"dataset '{dataset}' is not declared in environment "
                                f"{self.env.name}")
        if dataset == self.env.evaluation.dataset:
            raise ForbiddenRead(f"dataset '{dataset}' holds the evaluation rows of environment "
                                f"{self.env.name}: training code cannot read it")
        if isinstance(columns, str):
            raise ForbiddenRead("columns must be a list of column names, not a string")
        wanted = list(ds.columns) if columns is None else list(columns)
        unknown = [c for c in wanted if c not in ds.columns]
        if unknown:
            raise ForbiddenRead(f"column(s) {', '.join(map(repr, unknown))} not declared in "
                                f"dataset '{dataset}' of environment {self.env.name}")
        if format not in ("pandas", "arrow"):
            raise ValueError("format must be 'pandas' or 'arrow'")
        try:
            rule = parse_filters(filters, ds.columns, dataset)
        except KeyError as exc:
            raise ForbiddenRead(f"filter column {exc} is not declared in dataset '{dataset}' "
                                f"of environment {self.env.name}") from None
        if rule is not None and self.env.label_set() is not None \
                and dataset == self.env.label_dataset():
            raise ForbiddenRead(f"dataset '{dataset}' takes its labels from a label set: "
                                "ctx.labels() is aligned with all its rows, so it takes no "
                                "filters; filter the rows after reading them")
        self.reads.setdefault(dataset, [])
        self.reads[dataset] = sorted(set(self.reads[dataset]) | set(wanted)
                                     | set(rule.columns if rule else []))
        site = _caller_site(self._project.root)
        if site is not None:
            for column in wanted:
                self.read_sites.setdefault(column, site)
        return wanted, rule

    def _training_rows(self, dataset: str, table: pa.Table, split: list[str],
                       rule: Filters | None, wanted: list[str]) -> pa.Table:
        """Rows passing the filters, without the environment's evaluation rows, `wanted`
        columns only. Per row, so a batch gives the same rows as the whole table."""
        if rule is not None:
            table = rule.apply(table, self.env.datasets[dataset].columns)
        if split:  # the environment's evaluation rows never reach the training
            keep = ~holdout_mask(table, split, self.env.evaluation.fraction)
            table = table.filter(pa.array(keep))
        return table.select(wanted)

    def labels(self, format: Literal["pandas", "arrow"] = "pandas"):
        """The labels of the rows `ctx.read` returns for the label set's dataset, row for row:
        a pandas Series named after the taxonomy, or a pyarrow Array."""
        label_set = self.env.label_set()
        if label_set is None:
            raise ForbiddenRead(f"ctx.labels(): environment {self.env.name} takes its label from "
                                "a column, not a label set; read the label column with "
                                "ctx.read")
        if format not in ("pandas", "arrow"):
            raise ValueError("format must be 'pandas' or 'arrow'")
        _, labels = self._labeled_rows()
        if self._sampled(label_set.dataset):
            labels = labels.take(pa.array(self._sample(len(labels))))
        if format == "arrow":
            return labels

        return pd.Series(labels.to_pylist(), name=label_set.taxonomy.name, dtype=object)

    def label_table(self) -> pa.Table:
        """The resolved labels (`key`, `label`) of the environment's label set."""
        assert self.env.label is not None and self.env.label.labels is not None
        return self._label_sets().resolve(self.env.label.labels).table()

    def _label_sets(self) -> Any:
        # deferred: label sets bring the environment resolver (YAML) and the label formats,
        # which a run that reads no labels (a derived dataset's transform) never needs
        from buildenv.labels.labelset import LabelError, LabelSets

        if self.label_sets is None:
            self.label_sets = LabelSets(self._gate, self._label_pins)
        try:
            self.label_sets.resolve(self.env.label.labels)  # type: ignore[union-attr]
        except LabelError as exc:
            error = GateError(exc.diagnostics[0])
            self.gate_errors.append(error)
            raise error from None
        return self.label_sets

    def _labeled_rows(self) -> tuple[Any, pa.Array]:
        """Rows of the label set's dataset that have a usable label and are not held out."""
        if self._label_rows is None:
            label_set = self.env.label_set()
            assert label_set is not None
            labels = self.label_table()
            split = key_columns(self.env)
            dataset = label_set.dataset
            try:
                with self._gate.open(dataset) as read:
                    table = read.table(list(dict.fromkeys([label_set.key] + split)))
            except GateError as exc:
                self.gate_errors.append(exc)
                raise
            usable, values = labeled_rows(table, label_set.key, labels)
            held = holdout_mask(table, split, self.env.evaluation.fraction) if split else \
                np.zeros(table.num_rows, dtype=bool)
            keep = usable & ~held
            self._label_rows = (keep, values.filter(pa.array(keep[usable])))
            if self.env.restricted(dataset):
                self.restricted_reads.add(dataset)
        return self._label_rows

    def _split_keys(self, dataset: str) -> list[str]:
        label = self.env.label
        if label is None or self.env.label_dataset() != dataset:
            return []
        return key_columns(self.env)

    def _remember_strings(self, table: pa.Table) -> None:
        """Distinct restricted strings, so params the training logs can be checked."""
        for column in table.columns:
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                continue
            values = pc.unique(column)
            if len(self.redactor.values) + len(values) > _REDACTOR_LIMIT:
                self.redaction_complete = False
                return
            self.redactor.add(values.to_pylist())

    def log_metric(self, name: str, value: float) -> None:
        """A metric of this build (a finite number)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is not finite: {value}")
        self.metrics[str(name)] = value

    def log_param(self, name: str, value: Any) -> None:
        self.params[str(name)] = str(value)

    def set_holdout(self, X: Any, y: Any) -> None:
        """Deprecated: the environment owns evaluation (`evaluation:`); the sample is ignored."""
        self.deprecated_holdout = True


_OWN = Path(__file__).resolve().parents[1]  # the buildenv package


def _caller_site(root: Path) -> str | None:
    """`path:line` of the innermost frame of the training's own code calling into ctx."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        path = _own_code(frame.f_code.co_filename, root)
        if path is not None:
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@lru_cache(maxsize=4096)
def _own_code(filename: str, root: Path) -> str | None:
    """The training's own source file `filename` as a path relative to `root`; None for
    buildenv's, a library's or code without a file. Cached: a transform reads once per input
    file, and resolving every frame's path each time cost more than the read's bookkeeping."""
    path = Path(filename).resolve()
    if path.is_file() and not path.is_relative_to(_OWN) and path.is_relative_to(root) \
            and ".venv" not in path.parts and "site-packages" not in path.parts:
        return path.relative_to(root).as_posix()
    return None
