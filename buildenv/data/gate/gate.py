"""The data gate: the one path by which dataset bytes enter buildenv.

Every caller -- validate, drift, the training's `ctx.read`, evaluation, promotion, retrain --
reads through `Gate.open`, which

1. **pins** the bytes: a local file is opened once and decoded through that open file
   (`pread`), so a file replaced after the lock check is not what is read; a remote
   object is copied into memory while it is hashed;
2. **verifies** them: the whole file is hashed while it is decoded (a second thread reading the
   same open file; hashing releases the GIL), and the digest is compared with the lock's when
   the read completes. A local file must also keep its size, mtime and ctime (any write changes
   them). A mismatch raises `GateError` (BE055/BE056) naming the dataset and both digests;
   callers discard what they decoded;
3. **types** them with the format's one reader (`formats.FORMATS`), and
4. keeps them **private**: decoding errors of a restricted dataset carry the column, data row
   and type, never the value; every completed read of a restricted dataset appends a record to
   the audit log (`audit.AuditLog`) before its rows are handed over.

A partitioned dataset (uri ending in `/`) is read file by file (`PartitionedRead`), each file
pinned and verified against its own manifest entry as above; a few files are decoded at once in a
bounded thread pool (`read_ahead`: `BUILDENV_READ_THREADS`, default 2) and handed out in file
order, each file's error raised before any batch of a later file; partition columns come from
the paths, typed as declared. Filters on partition columns leave the files
they rule out unopened.

Hashing a lock (`digests`) reads bytes without decoding a value and is not audited.

Modules: `scope` (what a read needs from the gate, and the error factory), `pinned` (pinned
bytes and their digest), `reader` (what every read does alike: open, errors, verification,
audit), `dataset_read` (one file's verified, typed read), `partitioned_read` (a directory of
files, file by file), `read_ahead` (those files decoded in parallel, in order), `file_read`
(non-tabular files), `errors`; this module opens them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from buildenv.data.gate.dataset_read import DatasetRead
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.file_read import FileRead
from buildenv.data.gate.partitioned_read import PartitionedRead
from buildenv.data.gate.scope import ReadScope
from buildenv.data.lock.manifest import (
    Manifest,
)
from buildenv.data.tables import TableError, resolve
from buildenv.env.uris import names_directory

__all__ = ["Gate"]


# --- the gate --------------------------------------------------------------------------------

@dataclass
class Gate(ReadScope):
    """Opens reads of one environment's datasets for one purpose, verified against the lock's
    pins (`pins`: dataset -> locked digest; `manifests`: those of partitioned datasets)."""

    pins: Mapping[str, str] = field(default_factory=dict)
    manifests: Mapping[str, Manifest] = field(default_factory=dict)

    def open(self, dataset: str, *, uri: str | None = None, fmt: str | None = None,
             expect: str | Manifest | None | bool = True, origin: str | None = None,
             filters: Any = None) -> DatasetRead | PartitionedRead:
        """Open `dataset` (or another version of it at `uri`) for reading.

        `expect`: True (default) verifies against the lock's pin, a digest string (or, for a
        partitioned dataset, a manifest) verifies against that, None reads unpinned bytes (new
        data being validated or compared: the digest read is reported, nothing is claimed
        about it). `filters` (buildenv.data.gate.filters.Filters): partitioned datasets open only
        the files whose partition values may pass.
        """
        spec = self.env.datasets[dataset]
        uri = uri or spec.uri
        if spec.is_table:
            return self._open_table(dataset, uri, expect, origin, filters)
        if names_directory(uri):
            return PartitionedRead(self, dataset, spec, uri, self._manifest(dataset, expect),
                                   origin or uri, filters)
        expected: str | None
        if expect is True:
            expected = self.pins.get(dataset)
            if expected is None:
                raise GateError(self.dataset_error(
                    "BE050", f"dataset '{dataset}' has no locked digest to verify against",
                    dataset, hints=(f"run `buildenv lock {self.env.name}`",)))
        elif isinstance(expect, Manifest):
            raise GateError(self.dataset_error("BE052", f"dataset '{dataset}': the lock pins a "
                                       f"directory of files, the uri '{uri}' names one file",
                                       dataset, hints=(f"run `buildenv lock {self.env.name}`",)))
        else:
            expected = expect or None
        return DatasetRead(self, dataset, spec, uri, fmt or spec.format, expected,
                           origin or uri)

    def _open_table(self, dataset: str, uri: str, expect: Any, origin: str | None,
                    filters: Any) -> PartitionedRead:
        """A table version: pinned, the files of the lock's manifest (no table library
        needed); unpinned, the files of the version the declaration selects now, at `uri`."""
        spec = self.env.datasets[dataset]
        if expect is None or expect is False:
            try:
                listing = resolve(self.project, spec.model_copy(update={"uri": uri}))
            except TableError as exc:
                raise GateError(self.dataset_error(exc.code, f"dataset '{dataset}': "
                                                   f"{exc.message}", dataset,
                                                   hints=exc.hints)) from None
            return PartitionedRead(self, dataset, spec, uri, None, origin or uri, filters,
                                   listing=listing)
        return PartitionedRead(self, dataset, spec, uri, self._manifest(dataset, expect),
                               origin or uri, filters)

    def _manifest(self, dataset: str, expect: Any) -> Manifest | None:
        """The manifest a partitioned read is verified against (None: unpinned)."""
        if expect is None or expect is False:
            return None
        if isinstance(expect, Manifest):
            return expect
        pinned = self.pins.get(dataset) if expect is True else expect
        manifest = self.manifests.get(dataset)
        if pinned is None or manifest is None or manifest.digest != pinned:
            raise GateError(self.dataset_error(
                "BE050", f"dataset '{dataset}' has no locked manifest to verify its files "
                "against", dataset, hints=(f"run `buildenv lock {self.env.name}`",)))
        return manifest

    def open_file(self, uri: str, *, what: str, expect: str | None,
                  place: tuple[Any, ...] = (), restricted_dataset: str | None = None,
                  missing_code: str = "BE053", mismatch_code: str = "BE055",
                  relock: str | None = None, **audit: Any) -> FileRead:
        """Open a non-tabular file (a label export, a mapping) for a verified read.

        `what` names it in messages ("label set 'genre-v2'"); `place` is the YAML key path
        its diagnostics point at; `expect` is the locked digest (None: unpinned). When
        `restricted_dataset` is set, the file describes examples of that restricted dataset:
        its completed (or abandoned) reads are audited like the dataset's, with `audit` as
        details."""
        return FileRead(self, uri, what, expect, place, restricted_dataset, missing_code,
                        mismatch_code, relock, audit)
