"""What every read needs from the gate that opened it: whose data, for what, and where its
errors point.

Readers (`reader.Reader`: `DatasetRead`, `PartitionedRead`, `FileRead`) take a `ReadScope`,
not the `Gate`: they need the project, the environment and the purpose (for the audit log),
whether a dataset is restricted, the lock's stat cache (to take a digest it vouches for), and
the public error factory that places a diagnostic at a YAML key path (`placed_error`; a
dataset's `uri` line: `dataset_error`). `Gate` is a `ReadScope` that also knows the lock's pins
and opens the readers, so readers never import the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buildenv.core.diagnostics import Diagnostic
from buildenv.data.gate import handover
from buildenv.data.gate.pinned import Pinned
from buildenv.data.lock.digests import StatCache

if TYPE_CHECKING:  # an annotation only: the resolver (YAML, its rules) is not a reader's import
    from buildenv.core.project import Project
    from buildenv.env.resolve import Resolved
    from buildenv.env.spec import Environment

__all__ = ["ReadScope"]


@dataclass
class ReadScope:
    """Reads of one environment's datasets for one purpose (build, validate, drift, ...)."""

    project: Project
    env: Environment
    purpose: str
    where: Resolved | None = None  # to place diagnostics at the dataset's YAML line
    _stat_cache: StatCache | None = field(default=None, init=False, repr=False, compare=False)

    def restricted(self, dataset: str) -> bool:
        return self.env.restricted(dataset)

    def vouched(self, pinned: Pinned, fmt: str) -> str | None:
        """The digest the lock's stat cache recorded for exactly this open file, if it can be
        trusted (same size, mtime, ctime, inode and device, not modified near its hashing)."""
        identity = pinned.identity
        if identity is None:
            return None
        if handover.active():  # the cache is the build's: it judges the file it handed over
            return handover.vouched(pinned.location.key, pinned.algorithm, fmt)
        if self._stat_cache is None:
            self._stat_cache = StatCache.shared(self.project.state_dir / "statcache.json")
        hit = self._stat_cache.get(pinned.location.key, identity, pinned.algorithm, fmt)
        return hit.digest if hit is not None else None

    def dataset_error(self, code: str, message: str, dataset: str,
                      hints: tuple[str, ...] = ()) -> Diagnostic:
        """A diagnostic about `dataset`, at its `uri` line when the environment's file is known."""
        return self.placed_error(code, message, ("datasets", dataset, "uri"), hints)

    def placed_error(self, code: str, message: str, place: tuple[Any, ...],
                     hints: tuple[str, ...] = ()) -> Diagnostic:
        """A diagnostic at the YAML key path `place` (a label set's uri, a mapping)."""
        if self.where is not None and place:
            return self.where.diag(code, message, *place, hints=hints)
        return Diagnostic(code, message, hints=hints)
