"""What every read through the gate shares: opening, placed errors, verification, the audit.

`DatasetRead` (one file of a dataset), `PartitionedRead` (a directory of such files) and
`FileRead` (a label export, a mapping) are `Reader`s. The base owns what they must all do
alike, so that no reader can do it differently:

- **open**: locate the uri and pin its bytes (`pin`), or list it (`opening`); a file that is
  not there or cannot be read is BE053 (or the reader's own code), naming the file;
- **errors** point at the reader's YAML key path (`error`: the dataset's `uri` line, a label
  set's, a mapping's), through the scope's public error factory;
- **verify** the pinned bytes against the expected digest when the read completes (BE056 when
  the file was written meanwhile, the reader's mismatch code when it differs);
- **the store**: when the pinned file is gone (or is not known to hold the pinned bytes), the
  object store's copy of the expected bytes is read instead (`stored`); a copy that does not
  hash to its name is BE082 and removed;
- **audit** restricted reads: a completed read is recorded before its rows are used, a refused
  one with the digest found, and one that decoded rows but never completed (an error, a
  consumer that stopped early) when it is closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from buildenv.core.diagnostics import DiagnosticError
from buildenv.data.gate import handover
from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.pinned import Changed, Pinned
from buildenv.data.gate.privacy import first_line
from buildenv.data.gate.scope import ReadScope
from buildenv.data.lock.digests import ALGORITHMS
from buildenv.data.storage import Location, locate
from buildenv.data.store import ObjectStore, StoreError

__all__ = ["Reader", "digest_algorithm"]


def digest_algorithm(expected: str | None, given: str | None = None) -> str:
    """The algorithm a read hashes with: `given`, else the expected digest's, else sha256."""
    algorithm = given or (expected or "sha256:").split(":", 1)[0]
    return algorithm if algorithm in ALGORITHMS else "sha256"


class Reader:
    """One read through the gate of the bytes at `uri`, for `scope`.

    `what` names it in messages ("dataset 'movies'", "label set 'genre-v2'"); `place` is the
    YAML key path its diagnostics point at; `expected` the digest it must have (None: unpinned,
    the digest read is reported); `audited` the restricted dataset whose reads are recorded
    in the audit log (None: not audited)."""

    mismatch_code = "BE055"

    def __init__(self, scope: ReadScope, uri: str, what: str, place: tuple[Any, ...],
                 expected: str | None, audited: str | None):
        self.scope, self.uri, self.what, self.place = scope, uri, what, place
        self.expected = expected
        self.audited_dataset = audited
        self.digest: str | None = None  # known once the read is verified
        self.from_store = False  # the expected bytes are read from the object store
        self.columns_read: set[str] = set()
        self.rows_read: int | None = 0
        self._decoded = False  # rows (or bytes) were handed out: an unfinished read is audited
        self._audited = False

    @property
    def audited(self) -> bool:
        return self.audited_dataset is not None

    # --- errors -----------------------------------------------------------------------------
    def error(self, code: str, message: str, hints: tuple[str, ...] = ()) -> GateError:
        """A refusal of this read, placed at its YAML key path."""
        return GateError(self.scope.placed_error(code, message, self.place, hints))

    @contextmanager
    def opening(self, code: str = "BE053") -> Iterator[None]:
        """Around locating, listing or pinning the uri: a missing or unreadable file is `code`,
        naming it (the OS's reason, never file contents)."""
        try:
            yield
        except FileNotFoundError:
            raise self.error(code, f"{self.what}: '{self.uri}' not found") from None
        except OSError as exc:
            raise self.error(code, f"{self.what}: cannot read '{self.uri}': "
                                   f"{exc.strerror or first_line(str(exc))}") from None

    def pin(self, algorithm: str, code: str = "BE053") -> Pinned:
        """The bytes at `uri`, fixed for the whole read and hashed with `algorithm`; when the
        file is gone, the object store's copy of the expected bytes (`stored`)."""
        with self.opening(code):
            try:
                return Pinned(locate(self.uri, self.scope.project), algorithm)
            except FileNotFoundError:
                stored = self.stored(None)
                if stored is None:
                    raise
                return stored

    def stored(self, current: Pinned | None, restricted: bool | None = None) -> Pinned | None:
        """The expected bytes from the object store (fetched from the shared store when only
        it has them), replacing `current` (the uri's, which is then closed); None when the
        store does not hold them, or cannot be reached while the uri can be read. In a
        sandboxed training the store is hidden: the build hands over the pinned bytes."""
        if self.expected is None or handover.active():
            return None
        try:
            private = self.audited_dataset is not None if restricted is None else restricted
            path = ObjectStore.of(self.scope.project).find(self.expected, private)
        except StoreError as exc:
            if current is not None:
                return None  # the shared store cannot help: read the uri, verified as ever
            raise self.error(exc.code, f"{self.what}: {exc.message}", exc.hints) from None
        if path is None:
            return None
        if current is not None:
            current.close()
        self.from_store = True
        location = locate(self.uri, self.scope.project)
        return Pinned(Location(location.uri, str(path), str(path), path),
                      self.expected.split(":", 1)[0])

    # --- verification -------------------------------------------------------------------------
    def verify_pinned(self, pinned: Pinned) -> str:
        """Compare the bytes read with the expected digest; audit a restricted read. Raises
        GateError (and nothing read may be used) when they differ or changed meanwhile."""
        try:
            found = pinned.digest()
        except Changed:
            raise self.changed_error() from None
        except OSError as exc:
            raise self.error("BE053", f"{self.what}: cannot read '{self.uri}': "
                                      f"{exc.strerror or exc}") from None
        if self.digest is not None:
            return self.digest  # a later pass over the same pinned bytes
        if self.expected is not None and found != self.expected:
            if self.audited:
                self.audit("refused: does not match the lock", found)
            if self.from_store:
                raise self.damaged_copy() from None
            raise self.error(
                self.mismatch_code, f"{self.what} does not match the lock: expected "
                f"{self.expected}, found {found} ({self.uri}); nothing read from it is used",
                hints=(self.relock_hint(),))
        self.digest = found
        if self.audited:
            self.audit("read")
        return found

    def damaged_copy(self) -> GateError:
        """BE082: the object store's copy does not hash to its name. It is removed (the next
        pull fetches it again), so a damaged copy is never read twice."""
        assert self.expected is not None
        ObjectStore.of(self.scope.project).local.remove(self.expected)
        return self.error(
            "BE082", f"{self.what}: the object store's copy of {self.uri} is damaged (it does "
            f"not hash to {self.expected}); it was removed and nothing read from it is used",
            ("`buildenv pull` fetches it again from the shared store",))

    def changed_error(self) -> GateError:
        """BE056: the file was written to while it was being read."""
        return self.error("BE056", f"{self.what}: '{self.uri}' was written to while it was "
                                   "being read; nothing read from it is used",
                          hints=("retry when the writer has finished",))

    def relock_hint(self) -> str:
        return ("the file changed after the lock was checked; if the new bytes are intended, "
                f"review them and run `buildenv lock {self.scope.env.name}`")

    # --- the audit ----------------------------------------------------------------------------
    def audit(self, outcome: str, digest: str | None = None) -> None:
        """Record this read of the restricted dataset; GateError (BE801) when the log is not
        sound or cannot be written: then the read's rows are not used."""
        assert self.audited_dataset is not None
        self._audited = True
        try:
            AuditLog(self.scope.project.data_state_dir).append(
                purpose=self.scope.purpose, environment=self.scope.env.name,
                dataset=self.audited_dataset, digest=digest or self.digest or self.expected,
                columns=sorted(self.columns_read), rows=self.rows_read, outcome=outcome,
                **self.audit_details())
        except DiagnosticError as exc:  # BE801: not sound or not writable
            raise GateError(exc.diagnostics[0]) from None

    def audit_details(self) -> dict[str, Any]:
        """What else this kind of read records (files of a directory, the file of a label set)."""
        return {}

    # --- context manager ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the read; a restricted read that handed out rows but did not complete (an
        error, a mismatch, a consumer that stopped early) is audited here."""
        if self.audited and self._decoded and not self._audited:
            try:
                self.audit("incomplete")
            except GateError:
                pass  # the read already failed; its own error is what the caller reports
        self.release()

    def release(self) -> None:
        """Free what the read holds (its pinned file)."""
