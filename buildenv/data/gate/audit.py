"""The audit log: every read of a restricted dataset, in a tamper-evident, append-only file.

`.buildenv/audit/log.jsonl` holds one JSON record per line: sequence number, time, actor
(`core.actor`: declared, e.g. by `BUILDENV_ACTOR`), the OS user the process ran as, purpose (build, validate, drift, evaluate, stats, ...), environment, dataset,
locked digest, columns and row count, the hash of the previous record (`prev`) and its own
(`hash`: sha256 of the record's canonical JSON without `hash`). Editing, removing or reordering
a record breaks the chain at that record; `head.json` (written after each append) holds the
last sequence number and hash, so cutting records off the end is seen too.

Writers (parallel builds, several processes) take an exclusive lock (`core.appendlog`), check
that the log is sound at its end, append one line with a single write and fsync it, then update
the head. A crash between the two leaves the head one record behind, which `verify` accepts; a
torn last line (a crash inside the write) was never a record and is cut off by the next writer.
A log found tampered with refuses further records: reads of restricted data stop until someone
looks (`buildenv audit --verify` names the first bad record).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildenv.core.actor import actor, os_user
from buildenv.core.appendlog import AppendLog
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import canonical_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.data.gate import handover

__all__ = ["AuditLog", "Broken", "GENESIS"]

GENESIS = "sha256:" + "0" * 64
_TAIL = 1 << 16


def _hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class Broken:
    """The first record that does not hold, and why (1-based line number)."""

    line: int
    reason: str


class AuditLog:
    def __init__(self, state_dir: Path):
        self.folder = state_dir / "audit"
        self.path = self.folder / "log.jsonl"
        self.head_path = self.folder / "head.json"

    # --- writing ------------------------------------------------------------------------
    def append(self, *, purpose: str, environment: str | None, dataset: str,
               digest: str | None, columns: list[str], rows: int | None,
               **details: Any) -> dict[str, Any]:
        """Append one record; DiagnosticError(BE801) when the log is not sound or cannot be
        written (then whatever wanted the record does not happen). A sandboxed training cannot
        reach the log: the build appends the record for it."""
        if handover.active():
            return handover.audit(dict(purpose=purpose, environment=environment,
                                       dataset=dataset, digest=digest, columns=list(columns),
                                       rows=rows, **details))
        try:
            return self._append(purpose=purpose, environment=environment, dataset=dataset,
                                digest=digest, columns=columns, rows=rows, **details)
        except OSError as exc:
            raise DiagnosticError([Diagnostic(
                "BE801", f"cannot write the audit log {self.path}: "
                f"{exc.strerror or exc.__class__.__name__}; restricted data is not read, "
                "released or shown until it can be",
                hints=("make the state directory (`.buildenv/`, or the project's data_root) "
                       "writable",))], 1) from None

    def _append(self, *, purpose: str, environment: str | None, dataset: str,
                digest: str | None, columns: list[str], rows: int | None,
                **details: Any) -> dict[str, Any]:
        log = AppendLog(self.path, "the audit log")
        with log.locked():
            log.cut_torn_tail()
            last = self._sound_tail(log)
            record = {
                "seq": (last["seq"] + 1) if last else 1,
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "actor": actor(), "os_user": os_user(), "purpose": purpose,
                "environment": environment,
                "dataset": dataset, "digest": digest, "columns": sorted(columns),
                "rows": rows, **({"details": details} if details else {}),
                "prev": last["hash"] if last else GENESIS,
            }
            record["hash"] = _hash(record)
            log.append(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            atomic_write_text(self.head_path, json.dumps(
                {"seq": record["seq"], "hash": record["hash"]}, sort_keys=True) + "\n")
        return record

    def _sound_tail(self, log: AppendLog) -> dict[str, Any] | None:
        """The last record; refuses a log that was tampered with at its end (last record
        invalid, or fewer records than the head says)."""
        if not self.path.is_file():
            head = self._head()
            if head and head.get("seq"):
                raise self._refuse(f"the log is gone but {self.head_path.name} records "
                                   f"{head['seq']} records")
            return None
        lines = log.last_lines()
        if not lines:
            head = self._head()
            if head and head.get("seq"):
                raise self._refuse(f"the log is empty but {self.head_path.name} records "
                                   f"{head['seq']} records")
            return None
        try:
            last = json.loads(lines[-1])
        except ValueError:
            raise self._refuse("its last record is not JSON") from None
        if not isinstance(last, dict) or last.get("hash") != _hash(last):
            raise self._refuse("its last record does not match its hash")
        head = self._head()
        if head and int(head.get("seq", 0)) > int(last.get("seq", 0)):
            raise self._refuse(f"{self.head_path.name} records {head['seq']} records but the "
                               f"log ends at {last.get('seq')}")
        return last

    def _refuse(self, why: str) -> DiagnosticError:
        return DiagnosticError([Diagnostic(
            "BE801", f"the audit log {self.path} is not sound: {why}; restricted data is not "
            "read until it is", hints=("run `buildenv audit --verify` to find the first bad "
                                       "record, and restore the log from a backup",))], 1)

    def _head(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.head_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    # --- reading ------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every parseable record, in file order (verification is `verify`'s job)."""
        out: list[dict[str, Any]] = []
        if not self.path.is_file():
            return out
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
        return out

    def verify(self) -> tuple[int, Broken | None]:
        """(records checked, the first broken one or None)."""
        prev, seq, line_no = GENESIS, 0, 0
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.endswith("\n"):
                        return seq, Broken(line_no, "incomplete last line (a torn write)")
                    try:
                        record = json.loads(line)
                    except ValueError:
                        return seq, Broken(line_no, "not a JSON record")
                    if not isinstance(record, dict):
                        return seq, Broken(line_no, "not a JSON object")
                    if record.get("hash") != _hash(record):
                        return seq, Broken(line_no, "edited: its content does not match its "
                                           "hash")
                    if record.get("prev") != prev:
                        return seq, Broken(line_no, "the chain is broken before it: a record "
                                           "was removed, inserted or reordered")
                    if record.get("seq") != seq + 1:
                        return seq, Broken(line_no, f"sequence number {record.get('seq')} "
                                           f"where {seq + 1} was expected")
                    prev, seq = record["hash"], seq + 1
        head = self._head()
        if head is not None:
            if int(head.get("seq", 0)) > seq:
                return seq, Broken(seq + 1, f"missing: {self.head_path.name} records "
                                   f"{head['seq']} records, the log holds {seq} (records were "
                                   "cut off the end)")
            if int(head.get("seq", 0)) == seq and head.get("hash") != prev:
                return seq, Broken(seq, f"the last record differs from the one "
                                   f"{self.head_path.name} recorded")
        return seq, None
