"""`buildenv synth`: a synthetic stand-in for a restricted dataset, fitted with differential
privacy, and the environment that builds on it.

Method: MST (McKenna, Miklau, Sheldon 2021) as OpenDP's `mbi` integration runs it on top of
Private-PGM. Every declared column is coded by the environment alone (`access.coding`): domain
values are the keys, a range is cut into bins; OpenDP releases noisy one-way marginals of every
column, privately selects the pairs of columns that the model explains worst until they form a
spanning tree, releases those two-way marginals, and fits a graphical model to all of them.
Rows are sampled from the model and decoded back: a bin becomes a value drawn uniformly inside
it, with the declared dtype; a null where the column is not nullable, or a value outside the
domain, is replaced by a draw from the column's own synthetic values.

Columns with neither domain nor range are identifiers and carry nothing from the data: the key
of a dataset other rows join to (`evaluation.join`, e.g. `users.user_id`) is numbered 1..N; a
column that joins to another dataset (`ratings.user_id`) draws from that dataset's keys -- the
public dataset's, or the synthetic stand-in's when the other dataset is restricted (synthesize
it first). Associations across datasets are therefore not reproduced.

Randomness: the private measurements are random by nature and are drawn fresh on every run;
`--seed` fixes only the sampling of rows from the fitted model (and the identifiers), which is
recorded in the provenance.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from buildenv.access import backend, policy
from buildenv.access.coding import Coding, coding_for
from buildenv.access.derived_env import derived_name, existing_stand_ins, write_derived
from buildenv.access.dp_stats import check_bins
from buildenv.access.fidelity import distribution, jsd, linf, pair_report
from buildenv.access.policy import locked_version
from buildenv.access.unit import contributions, truncation_for
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import arrow_type
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.provenance import METADATA_KEY, embedded_provenance
from buildenv.data.validate.validate import validate_env
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import INTEGER_DTYPES, Column
from buildenv.labels.locking import lock_environments

__all__ = ["METHOD", "Identifier", "mst_budget", "plan_columns", "run_synth"]

METHOD = "mst"
LAPLACE_95 = math.log(20) / math.sqrt(2)  # 95% half-width of a Laplace, in standard deviations


@dataclass(frozen=True)
class Identifier:
    """A column without domain or range: numbered, or drawn from the keys of `target`."""

    name: str
    column: Column
    target: str | None = None


def _rows_dataset(res: Resolved) -> str | None:
    env = res.env
    if env.evaluation.dataset:
        return env.evaluation.dataset
    return env.label.dataset if env.label else None


def plan_columns(res: Resolved, dataset: str, bins: int) -> tuple[list[Coding], list[Identifier]]:
    """How every declared column of `dataset` is synthesized (BE823 when one cannot be)."""
    env = res.env
    rows_ds = _rows_dataset(res)
    foreign: dict[str, str] = {}
    for other, keys in env.evaluation.join.items():
        if dataset == rows_ds and other != dataset:
            foreign.update({k: other for k in keys})
    codings, identifiers, problems = [], [], []
    for name, column in env.datasets[dataset].columns.items():
        coding = coding_for(name, column, bins)
        if coding.kind in ("categorical", "binned"):
            codings.append(coding)
        elif coding.kind == "keys":
            identifiers.append(Identifier(name, column, foreign.get(name)))
        else:
            problems.append(res.diag(
                "BE823", f"column '{name}' ({column.dtype}) of dataset '{dataset}' has neither "
                "a range nor a domain: its values cannot be synthesized without looking at the "
                "data", "datasets", dataset, "columns", name,
                hints=(f"declare the range users may know publicly: `{name}: {{dtype: "
                       f"{column.dtype}, range: [lo, hi]}}`",)))
    if problems:
        raise DiagnosticError(problems, 2)
    if len(codings) < 2:
        raise DiagnosticError([res.diag(
            "BE827", f"dataset '{dataset}' has {len(codings)} column(s) with a domain or range; "
            "MST models pairs of columns and needs at least two", "datasets", dataset,
            hints=("declare a domain or range on more of its columns",))], 2)
    return codings, identifiers


def mst_budget(dp: Any, epsilon: float, columns: int) -> tuple[float, int]:
    """(epsilon, selections) to run OpenDP 0.16's MST with: the largest epsilon <= `epsilon`,
    and the most pair selections <= `columns - 1`, for which MST's split of the budget adds up
    (as OpenDP's composition maps it) to no more than the whole.

    MST divides its selection budget into one part per selection, one ulp below the quotient,
    and OpenDP sums the parts rounding up: for some budgets the sum exceeds the whole by an ulp
    and the release fails ("insufficient budget for query"), and for 8, 12, 16 or 20 parts it
    does for every budget (the quotient is exact, so the parts sum to one ulp below the whole
    only without rounding). buildenv then lowers epsilon by at most 1e-5 relative, or selects
    one pair fewer (the model is a spanning forest rather than a tree). The check needs no
    data, so it runs before anything is read."""
    def prior(x: float) -> float:
        return float(np.nextafter(x, -np.inf))

    domain = dp.vector_domain(dp.atom_domain(T="i64"))

    def total(parts: list[float]) -> float:
        return float(dp.c.make_adaptive_composition(domain, dp.symmetric_distance(),
                                                    dp.max_divergence(), 1, parts).map(1))

    def fits(e: float, n: int) -> bool:
        oneway = e * 0.5
        multiway = prior(prior(e - oneway))
        if total([oneway, multiway]) > e:
            return False
        measure = multiway * 0.9
        select = prior(prior(multiway - measure))
        if total([select, measure]) > multiway:
            return False
        return total([prior(select / n)] * n) <= select

    for selections in range(columns - 1, 0, -1):
        for step in range(256):
            candidate = epsilon * (1 - step * 2 ** -32)
            if fits(candidate, selections):
                return candidate, selections
    raise AssertionError(f"no budget split near {epsilon} composes for MST over {columns} "
                         "columns")


def _check(rows: int) -> None:
    if rows <= 0:
        raise DiagnosticError([Diagnostic(
            "BE815", f"--rows must be at least 1 (got {rows})",
            hints=("the number of synthetic rows to write, e.g. --rows 10000",))], 2)


def _check_pair(pair: tuple[str, str] | None, codings: list[Coding], dataset: str) -> None:
    if pair is None:
        return
    names = [c.name for c in codings]
    for name in pair:
        if name not in names:
            hint = did_you_mean(name, names) or ("columns with a domain or range: "
                                                 + ", ".join(names))
            raise DiagnosticError([Diagnostic(
                "BE824", f"--pair: '{name}' is not a column of '{dataset}' with a domain or "
                "range (identifiers carry no dependency to report)", hints=(hint,))], 2)
    if pair[0] == pair[1]:
        raise DiagnosticError([Diagnostic("BE824", "--pair names one column twice",
                                          hints=("name two different columns: --pair a,b",))],
                              2)


def _foreign_keys(project: Project, multiverse: Multiverse, res: Resolved,
                  identifiers: list[Identifier], stand_ins: dict[str, dict[str, Any]]
                  ) -> dict[str, np.ndarray]:
    """The key values each foreign-key identifier draws from (public or synthetic data only)."""
    out: dict[str, np.ndarray] = {}
    for ident in identifiers:
        target = ident.target
        if target is None:
            continue
        if not res.env.restricted(target):
            pinned = locked_version(project, res, target)
            gate, expect, env_name = Gate(project, res.env, "synth", where=res), \
                pinned.digest, res.name
        elif target in stand_ins:
            derived = multiverse.resolve(derived_name(res.name))
            gate, expect, env_name = Gate(project, derived.env, "synth", where=derived), \
                None, derived.name
        else:
            raise DiagnosticError([res.diag(
                "BE822", f"column '{ident.name}' joins dataset '{target}', which is restricted "
                f"and has no synthetic stand-in yet: its keys cannot be drawn from real data",
                "evaluation", "join", target,
                hints=(f"synthesize it first: `buildenv synth {res.name} --dataset {target} "
                       "--rows N`",))], 2)
        try:
            with gate.open(target, expect=expect) as read:
                table = read.table([ident.name])
        except GateError as exc:
            raise DiagnosticError([exc.diagnostic], 1) from None
        if ident.name not in table.column_names:
            raise DiagnosticError([Diagnostic(
                "BE822", f"dataset '{target}' in {env_name} has no column '{ident.name}' to draw "
                f"'{ident.name}' from")], 2)
        values = np.unique(table.column(ident.name).drop_null().to_numpy(zero_copy_only=False))
        if not len(values):
            raise DiagnosticError([Diagnostic(
                "BE822", f"dataset '{target}' in {env_name} has no '{ident.name}' values to "
                "draw from")], 2)
        out[ident.name] = values
    return out


def _read_codes(read: Any, codings: list[Coding], truncation: Any) -> dict[str, pa.Array]:
    """Every row's cell per coded column; the null cell becomes a null (OpenDP's null key).
    Cells are kept as uint8/uint16 while batches stream in, and the Arrow pool's freed batch
    buffers are handed back before the fit (which needs the memory)."""
    wanted = list(dict.fromkeys([c.name for c in codings]
                                + ([truncation.key] if truncation else [])))
    strings = [c.name for c in codings if c.dtype == "string"]
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in codings}
    compact = {c.name: np.uint8 if len(c.cells) <= 256 else np.uint16 if len(c.cells) <= 65536
               else np.uint32 for c in codings}
    for batch in read.batches(wanted, dictionary=strings):
        mask = truncation.keep(batch) if truncation is not None else None
        for coding in codings:
            cells = coding.encode(batch.column(batch.schema.get_field_index(coding.name)))
            cells = cells if mask is None else cells[mask]
            parts[coding.name].append(cells.astype(compact[coding.name]))
        del batch
    out = {}
    for coding in codings:
        chunks = parts.pop(coding.name)
        cells = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
        out[coding.name] = pa.array(cells.astype(np.uint32), mask=cells == coding.null_cell)
    pa.default_memory_pool().release_unused()
    return out


def fit(dp: Any, pl: Any, codes: dict[str, pa.Array], codings: list[Coding], epsilon: float,
        selections: int, d_in: int) -> Any:
    """OpenDP's MST release over the coded frame: a `ContingencyTable`."""
    frame = pl.from_arrow(pa.table(codes))
    keys = {c.name: list(range(len(c.cells) - 1)) for c in codings}
    context = dp.Context.compositor(data=frame.lazy(),
                                   privacy_unit=dp.unit_of(contributions=d_in),
                                   privacy_loss=dp.loss_of(epsilon=epsilon))
    algorithm = dp.mbi.MST(num_selections=selections)
    query = context.query(epsilon=epsilon).contingency_table(keys=keys, algorithm=algorithm)
    return query.release()


def sample(table: Any, codings: list[Coding], rows: int, seed: int) -> dict[str, np.ndarray]:
    """Cells of `rows` synthetic rows (the null cell for null), drawn i.i.d. from the model.
    (mbi's default, "round", assigns stratified values in row order within each group of a
    parent column, which makes two children of one parent move together: a dependency the
    model does not have.) mbi samples with NumPy's global generator: it is seeded here and
    restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        frame = table.synthesize(rows=rows, method="sample")
    finally:
        np.random.set_state(state)
    cells = {c.name: frame[c.name].fill_null(c.null_cell).to_numpy().astype(np.int32)
             for c in codings}
    del frame
    return cells


def _settle(coding: Coding, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace cells the declared column cannot hold (nulls where it is not nullable, values
    outside the domain) by draws from the column's own valid synthetic cells."""
    bad = cells == coding.null_cell if not coding.column.nullable else \
        np.zeros(len(cells), bool)
    if coding.kind == "categorical":
        bad |= cells == len(coding.keys)
    if not bad.any():
        return cells
    pool = cells[~bad & (cells != coding.null_cell)]
    if not len(pool):
        pool = np.arange(len(coding.keys) if coding.kind == "categorical" else coding.bins)
    cells[bad] = rng.choice(pool, int(bad.sum()))  # in place: the cells are this run's own
    return cells


def decode(coding: Coding, cells: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Cells back to values of the declared dtype."""
    nulls = cells == coding.null_cell
    target = arrow_type(coding.dtype)
    if coding.kind == "categorical":
        keys = pa.array(list(coding.keys), type=target)
        indices = pa.array(np.where(nulls, 0, cells), mask=nulls)
        return keys.take(indices)
    values = coding.decode_bins(cells, rng)
    if coding.dtype == "date":
        array = pa.array(values.astype(np.int32), mask=nulls).cast(pa.date32())
    elif coding.dtype == "timestamp" or coding.integral:
        array = pa.array(values.astype(np.int64), mask=nulls).cast(target)
    else:
        array = pa.array(values.astype(np.float64), mask=nulls).cast(target)
    return array


def identifier_values(ident: Identifier, rows: int, pool: np.ndarray | None,
                      rng: np.random.Generator) -> pa.Array:
    target = arrow_type(ident.column.dtype)
    if pool is not None:
        return pa.array(rng.choice(pool, rows)).cast(target)
    if ident.column.dtype in INTEGER_DTYPES:
        top = {"int8": 127, "int16": 32_767, "int32": 2**31 - 1}.get(ident.column.dtype, 2**62)
        return pa.array(np.arange(rows, dtype=np.int64) % top + 1).cast(target)
    width = max(6, len(str(rows)))
    return pa.array([f"{ident.name}-{i:0{width}d}" for i in range(1, rows + 1)], pa.string())


def _valid_cells(coding: Coding) -> np.ndarray:
    """Cells a value of the declared column can be in (the synthetic file holds no others)."""
    valid = np.ones(len(coding.cells), bool)
    if coding.kind == "categorical":
        valid[len(coding.keys)] = False
    if not coding.column.nullable:
        valid[coding.null_cell] = False
    return valid


def fidelity(table: Any, codings: list[Coding], cells: dict[str, np.ndarray], rows: int,
             pair: tuple[str, str] | None) -> dict[str, Any]:
    """Synthetic marginals vs the privately released ones (`access.fidelity`), over the cells
    the declared columns allow (noise puts mass in the others; the file has none there)."""
    from mbi import Factor  # pants: no-infer-dep

    one_way: dict[str, list[Any]] = {}
    for measurement in table.marginals.flatten():
        if len(measurement.clique) == 1 and measurement.query == Factor.datavector:
            one_way.setdefault(measurement.clique[0], []).append(measurement)
    out = []
    for coding in codings:
        k = len(coding.cells)
        valid = _valid_cells(coding)
        synthetic = np.bincount(cells[coding.name], minlength=k)[:k][valid]
        released = _combine(one_way.get(coding.name, []), k)
        model = np.asarray(table.project([coding.name]), dtype=np.float64).ravel()
        total = max(float(np.clip(model, 0, None)[valid].sum()), 1.0)
        std = float(table.std([coding.name]))
        frequency = distribution(model[valid])
        # per cell: the model's private error (95% of a Laplace of that deviation) plus the
        # sampling error of `rows` draws (95% normal) and one row of rounding
        accuracy = float(np.max(LAPLACE_95 * std / total
                                + 1.96 * np.sqrt(frequency * (1 - frequency) / rows)))
        accuracy += 1.0 / rows
        p = distribution(synthetic)
        q = distribution((released if released is not None else model)[valid])
        out.append({"name": coding.name, "kind": coding.kind,
                    "cells": [c for c, ok in zip(coding.cells, valid) if ok],
                    "linf": linf(p, q), "jsd": jsd(p, q), "accuracy": accuracy,
                    "synthetic": p.tolist(), "released": q.tolist()})
    report: dict[str, Any] = {"columns": out}
    if pair is not None:
        a, b = (next(c for c in codings if c.name == n) for n in pair)
        ka, kb = len(a.cells), len(b.cells)
        joint = np.zeros((ka, kb))
        np.add.at(joint, (cells[a.name], cells[b.name]), 1)
        fitted = np.asarray(table.project([a.name, b.name]), dtype=np.float64).reshape(ka, kb)
        keep = np.ix_(_valid_cells(a), _valid_cells(b))
        measured = any(set(clique) == {a.name, b.name} for clique in table.marginals.cliques())
        report["pair"] = pair_report(a.name, b.name, joint[keep], fitted[keep], measured)
    return report


def _combine(measurements: list[Any], k: int) -> np.ndarray | None:
    """Inverse-variance average of the noisy one-way measurements of a column."""
    usable = [m for m in measurements if np.asarray(m.noisy_measurement).size == k]
    if not usable:
        return None
    weights = np.asarray([1.0 / m.stddev ** 2 for m in usable])
    stacked = np.stack([np.asarray(m.noisy_measurement, dtype=np.float64) for m in usable])
    return np.asarray((weights[:, None] * stacked).sum(axis=0) / weights.sum())


def _return_free_memory() -> None:
    """Hand freed memory back to the system between the stages of a synthesis: Arrow's pool
    and glibc's heap keep what was freed, which would add up with the next stage's peak."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _write_parquet(path: Path, table: pa.Table) -> str:
    """Write atomically; the sha256 content digest of the file written."""

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"sha256:{digest}"


def run_synth(multiverse: Multiverse, res: Resolved, dataset: str, rows: int, epsilon: float,
              seed: int = 0, bins: int = 16, out: str | None = None,
              pair: tuple[str, str] | None = None) -> dict[str, Any]:
    """`buildenv synth` end to end (the order of events is `access.policy`'s)."""
    project = multiverse.project
    policy.require_dataset(res, dataset)
    _check(rows)
    check_bins(bins)
    if not res.env.restricted(dataset):
        raise DiagnosticError([Diagnostic(
            "BE818", f"dataset '{dataset}' is not restricted in {res.name}: use it as it is",
            hints=("`buildenv synth` makes stand-ins for data people may not see",))], 2)
    codings, identifiers = plan_columns(res, dataset, bins)
    _check_pair(pair, codings, dataset)
    uri = out or f"data/synthetic/{res.name}/{dataset}.parquet"
    stand_ins = existing_stand_ins(multiverse, res.name)
    req = policy.request(project, res, dataset, epsilon, "synth")
    dp, pl = backend.polars("`buildenv synth`")
    pools = _foreign_keys(project, multiverse, res, identifiers, stand_ins)
    epsilon_used, selections = mst_budget(dp, req.epsilon, len(codings))
    gate = Gate(project, res.env, "synth", pins={dataset: req.pinned.digest},
                manifests=req.pinned.manifests_for(dataset), where=res)
    try:
        with gate.open(dataset) as read:
            codes = _read_codes(read, codings, truncation_for(res.env, dataset))
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 1) from None
    names = [c.name for c in codings]
    entry = req.spend(columns=names, method=METHOD, rows=rows, seed=seed)
    table = fit(dp, pl, codes, codings, epsilon_used, selections,
                contributions(res.env, dataset))
    del codes
    _return_free_memory()
    cells = sample(table, codings, rows, seed)
    rng = np.random.default_rng(seed)
    cells = {c.name: _settle(c, cells[c.name], rng) for c in codings}
    report = fidelity(table, codings, cells, rows, pair)
    del table
    columns = {}
    for coding in codings:  # one column at a time: its cells go as its values arrive
        columns[coding.name] = decode(coding, cells.pop(coding.name), rng)
    for ident in identifiers:
        columns[ident.name] = identifier_values(ident, rows, pools.get(ident.name), rng)
    order = list(res.env.datasets[dataset].columns)
    record: dict[str, Any] = {"uri": uri, "digest": "", "source": {
        "environment": res.name, "dataset": dataset, "digest": req.pinned.digest},
        "method": METHOD, "epsilon": req.epsilon, "seed": seed, "rows": rows}
    policy.audit_release(req, names, 0.0, entry, method=METHOD, rows_written=rows, seed=seed,
                         output=uri)
    arrow = pa.table({name: columns[name] for name in order})
    arrow = arrow.replace_schema_metadata(
        {METADATA_KEY: json.dumps(embedded_provenance(record), sort_keys=True)})
    record["digest"] = _write_parquet(project.data_base / uri, arrow)
    del arrow, columns
    _return_free_memory()
    derived = write_derived(multiverse, res, dataset, record)
    fresh = Multiverse(project)
    _, problems = lock_environments(fresh, [derived])
    problems += validate_env(fresh.resolve(derived), project, datasets=[dataset])
    if any(p.is_error for p in problems):
        raise DiagnosticError(problems, 1)
    spent = req.ledger.spent(req.scope)
    report.update({
        "environment": res.name, "dataset": dataset, "derived_environment": derived,
        "file": uri, "digest": record["digest"], "rows": rows, "method": METHOD,
        "epsilon": req.epsilon, "epsilon_released": epsilon_used, "seed": seed,
        "pairs_selected": selections,
        "identifiers": {i.name: (f"drawn from {i.target}" if i.target else "numbered")
                        for i in identifiers},
        "budget": {"scope": req.scope, "total": req.budget, "spent": spent,
                   "left": max(0.0, req.budget - spent)}})
    return report
