"""Row filters of `ctx.read(..., filters=...)` / `ctx.scan`: pyarrow's and pandas' syntax.

`filters` is a list of `(column, op, value)` conditions, all of which must hold, or a list of
such lists, any of which must hold (the syntax: `buildenv.env.conditions`). Conditions on partition columns are decided from the file paths, so the files they
rule out are never opened (`Condition.holds`); every condition is then applied to the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.formats import arrow_type
from buildenv.env.conditions import parse_conditions

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.env.spec import Column

__all__ = ["Condition", "Filters", "parse_filters"]

@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any  # a Python value of the column's type; a tuple for in / not in

    def holds(self, value: Any) -> bool:
        """Whether a (partition) value satisfies the condition; null satisfies nothing."""
        if value is None:
            return False
        if self.op == "in":
            return value in self.value
        if self.op == "not in":
            return value not in self.value
        try:
            return bool({"==": value == self.value, "!=": value != self.value,
                    "<": value < self.value, "<=": value <= self.value,
                    ">": value > self.value, ">=": value >= self.value}[self.op])
        except TypeError:
            return False

    def expression(self, types: Mapping[str, Any]) -> Any:
        field = pc.field(self.column)
        kind = types[self.column]
        if self.op in ("in", "not in"):
            inside = field.isin(pa.array(list(self.value), type=kind))
            return inside if self.op == "in" else ~inside
        scalar = pa.scalar(self.value, type=kind)
        return {"==": field == scalar, "!=": field != scalar, "<": field < scalar,
                "<=": field <= scalar, ">": field > scalar, ">=": field >= scalar}[self.op]


@dataclass(frozen=True)
class Filters:
    """Any of `alternatives` (each: all of its conditions)."""

    alternatives: tuple[tuple[Condition, ...], ...]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for alt in self.alternatives for c in alt))

    def may_hold(self, values: Mapping[str, Any]) -> bool:
        """Whether rows with these partition values can pass: conditions on other columns are
        unknown here and assumed to hold."""
        return any(all(c.holds(values[c.column]) for c in alt if c.column in values)
                   for alt in self.alternatives)

    def expression(self, declared: Mapping[str, Column]) -> Any:
        types = {c: arrow_type(declared[c].dtype) for c in self.columns}
        out = None
        for alt in self.alternatives:
            conj = None
            for cond in alt:
                e = cond.expression(types)
                conj = e if conj is None else conj & e
            out = conj if out is None else out | conj
        return out

    def apply(self, table: Any, declared: Mapping[str, Column]) -> Any:
        """The rows of a pyarrow Table (holding the filter columns) that pass."""
        return table.filter(self.expression(declared))


def parse_filters(filters: Any, declared: Mapping[str, Column], dataset: str) -> Filters | None:
    """Normalize `filters` (`buildenv.env.conditions` reads the syntax); KeyError for an
    undeclared column, ValueError saying what else is wrong (an unknown operator, a value of
    the wrong type)."""
    if filters is None:
        return None
    return Filters(tuple(tuple(Condition(column, op, value) for column, op, value in group)
                         for group in parse_conditions(filters, declared)))
