"""`ctx`: the training's only view of data and of the build (SPEC §4).

`ctx.read` returns exactly the asked columns of declared datasets; anything
else raises `ForbiddenRead`, which the runner reports as BE303 at the user's
line. Metrics, params and the held-out sample go back to the build.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from buildenv.core.project import Project
from buildenv.data.storage import locate
from buildenv.env.spec import Environment

__all__ = ["BuildContext", "ForbiddenRead"]


class ForbiddenRead(Exception):
    """The training asked for data the environment does not declare."""


class BuildContext:
    def __init__(self, env: Environment, seed: int, project: Project):
        self.env = env
        """The resolved environment."""
        self.seed = seed
        """The build seed; use it for every random_state."""
        self._project = project
        self.metrics: dict[str, float] = {}
        self.params: dict[str, str] = {}
        self.reads: dict[str, list[str]] = {}
        self.holdout: tuple[Any, Any] | None = None

    def read(self, dataset: str, columns: list[str] | None = None,
             format: Literal["pandas", "arrow"] = "pandas"):
        """Columns of a declared dataset: a pandas DataFrame, or a pyarrow Table."""
        ds = self.env.datasets.get(dataset)
        if ds is None:
            raise ForbiddenRead(f"dataset '{dataset}' is not declared in environment "
                                f"{self.env.name}")
        if isinstance(columns, str):
            raise ForbiddenRead("columns must be a list of column names, not a string")
        wanted = list(ds.columns) if columns is None else list(columns)
        unknown = [c for c in wanted if c not in ds.columns]
        if unknown:
            raise ForbiddenRead(f"column(s) {', '.join(map(repr, unknown))} not declared in "
                                f"dataset '{dataset}' of environment {self.env.name}")
        if format not in ("pandas", "arrow"):
            raise ValueError("format must be 'pandas' or 'arrow'")
        self.reads.setdefault(dataset, [])
        self.reads[dataset] = sorted(set(self.reads[dataset]) | set(wanted))
        table = _read_table(ds.uri, ds.format, wanted, self._project,
                            {c: ds.columns[c].dtype for c in wanted})
        return table if format == "arrow" else table.to_pandas()

    def log_metric(self, name: str, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is not finite: {value}")
        self.metrics[str(name)] = value

    def log_param(self, name: str, value: Any) -> None:
        self.params[str(name)] = str(value)

    def set_holdout(self, X: Any, y: Any) -> None:
        """A held-out sample (model inputs and labels): used for verification (ONNX parity),
        feature importance, and promotion gates."""
        self.holdout = (X, y)


def _read_table(uri: str, fmt: str, columns: list[str], project: Project,
                dtypes: dict[str, str]):
    location = locate(uri, project)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        from buildenv.data.validate import arrow_type

        with location.open() as stream:  # CSV has no types: the environment's are the truth
            return pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(
                newlines_in_values=True), convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: arrow_type(t) for c, t in dtypes.items()}))
    import pyarrow.parquet as pq

    with location.open_random() as handle:
        return pq.read_table(handle, columns=columns)
