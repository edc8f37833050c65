"""`buildenv peek`: the audited break-glass read of real rows of a restricted dataset.

Every other command keeps rows of a restricted dataset from people; when a person truly must
look (a value that fails validation, an incident), `peek` shows at most `--rows` rows, and only

- with a reason (`--reason`, recorded verbatim),
- to an actor the environment allows (`privacy.peek.actors`; actor = `BUILDENV_ACTOR`, else
  the CI's user, else the login name -- the audit log's rule), and
- after the access is in the audit log: who, why, how many rows are shown, which locked digest.
  The record is appended (and fsynced) before a single row is printed; if the log cannot take
  it, nothing is printed. A refused attempt by an actor not allowed is recorded too.

The rows come from the locked version, read through the data gate (verified: the whole file is
read so its digest can be checked before anything is shown). `--invalid COLUMN` shows only rows
whose COLUMN breaks its declaration (null where not nullable, outside the domain or range):
what a person debugging `buildenv validate` needs to see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.access.coding import coding_for
from buildenv.access.policy import locked_version, require_dataset
from buildenv.core.actor import actor
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.env.resolve import Resolved

__all__ = ["peek"]


def _usage(code: str, message: str, hint: str) -> DiagnosticError:
    return DiagnosticError([Diagnostic(code, message, hints=(hint,))], 2)


def peek(project: Project, res: Resolved, dataset: str, rows: int, reason: str | None,
         columns: list[str] | None = None, invalid: str | None = None) -> pa.Table:
    """The rows to show, after the access is recorded. Raises diagnostics otherwise."""
    require_dataset(res, dataset)
    if rows <= 0:
        raise _usage("BE815", f"--rows must be at least 1 (got {rows})",
                     "ask for as few rows as the question needs, e.g. --rows 5")
    if reason is None or not reason.strip():
        raise _usage("BE816", "peek needs a reason: it is recorded in the audit log with the "
                     "access", 'say why, e.g. --reason "INC-1234: rows failing BE204 in '
                     'country"')
    declared = res.env.datasets[dataset].columns
    wanted = list(columns or declared)
    for name in wanted + ([invalid] if invalid else []):
        if name not in declared:
            hint = did_you_mean(name, declared) or ("columns: " + ", ".join(declared))
            raise DiagnosticError([Diagnostic("BE010", f"unknown column '{name}' in dataset "
                                              f"'{dataset}'", hints=(hint,))], 2)
    pinned = locked_version(project, res, dataset)
    restricted = res.env.restricted(dataset)
    who = actor()
    log = AuditLog(project.data_state_dir)
    if restricted and who not in res.env.privacy.peek.actors:
        _record(log, res, dataset, pinned.digest, wanted, 0, reason,
                f"refused: actor '{who}' not in privacy.peek.actors")
        allowed = res.env.privacy.peek.actors
        raise DiagnosticError([res.diag(
            "BE817", f"actor '{who}' may not peek at restricted dataset '{dataset}' in "
            f"{res.name} (privacy.peek.actors: {', '.join(allowed) if allowed else 'nobody'});"
            " the attempt was recorded in the audit log", "privacy", "peek", hints=(
                "learn about the data without seeing it: `buildenv stats` (private figures) or "
                "`buildenv synth` (a synthetic stand-in)",
                "if a person must look, an owner of the policy adds them to privacy.peek.actors"
                ))], 1)
    gate = Gate(project, res.env, "peek", pins={dataset: pinned.digest},
                manifests=pinned.manifests_for(dataset), where=res)
    read_columns = list(dict.fromkeys(wanted + ([invalid] if invalid else [])))
    shown: list[pa.RecordBatch] = []
    count = 0
    try:
        with gate.open(dataset) as read:
            for batch in read.batches(read_columns, typed=True):
                if count < rows:
                    if invalid:
                        batch = batch.filter(pa.array(_breaks(res, dataset, invalid, batch)))
                    take = batch.slice(0, rows - count)
                    shown.append(take)
                    count += take.num_rows
            digest = read.digest
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 1) from None
    table = pa.Table.from_batches(shown) if shown else pa.table(
        {c: pa.array([], pa.null()) for c in read_columns})
    table = table.select([c for c in wanted if c in table.column_names])
    if restricted:
        _record(log, res, dataset, digest, wanted, table.num_rows, reason, "shown",
                invalid=invalid)
    return table


def _breaks(res: Resolved, dataset: str, name: str, batch: pa.RecordBatch) -> np.ndarray:
    """Rows whose `name` breaks its declaration: null where not nullable, outside domain or
    range."""
    column = res.env.datasets[dataset].columns[name]
    array = batch.column(batch.schema.get_field_index(name))
    coding = coding_for(name, column)
    nulls = ~np.asarray(array.is_valid())
    bad = nulls if not column.nullable else np.zeros(len(array), bool)
    if coding.kind == "categorical" and column.domain is not None:
        bad |= (coding.encode(array) == len(coding.keys)) & ~nulls
    elif coding.kind == "binned":
        values = _unclamped(coding, array)
        bad |= ~nulls & ((values < coding.lo) | (values > coding.hi))
    return bad


def _unclamped(coding: Any, array: pa.Array) -> np.ndarray:
    if coding.dtype == "date":
        array = pc.cast(array, pa.date32()).cast(pa.int32())
    elif coding.dtype == "timestamp":
        array = pc.cast(array, pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())
    return np.asarray(pc.fill_null(array.cast(pa.float64()), coding.lo), dtype=np.float64)


def _record(log: AuditLog, res: Resolved, dataset: str, digest: str | None, columns: list[str],
            rows: int, reason: str | None, outcome: str, **details: Any) -> None:
    log.append(purpose="peek", environment=res.name, dataset=dataset, digest=digest,
               columns=columns, rows=rows, outcome=outcome, reason=reason,
               **{k: v for k, v in details.items() if v is not None})
