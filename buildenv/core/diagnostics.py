"""Diagnostics: the one value every check reports through.

A diagnostic is data (path, line, col, stable code, severity, message, hints).
Text, JSON and SARIF are pure renderings of it, so every stage of buildenv --
spec loading, locking, static checks, validation, verification, drift --
speaks to users and to CI in the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from buildenv import __version__

__all__ = ["Diagnostic", "DiagnosticError", "Severity", "did_you_mean", "render", "sort_diagnostics"]

# Deferred imports (buildenv, difflib): every command imports this module, `buildenv lock`'s
# quick path first; the table of codes (268 entries) and difflib are read only to render SARIF
# or to suggest a name, about 5 ms of each lock's start-up (bench/README.md, "Session 10 (h83)").


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Diagnostic:
    """One finding, located in a file when it has a location."""

    code: str
    message: str
    path: str | None = None
    line: int | None = None
    col: int | None = None
    severity: Severity = Severity.ERROR
    hints: tuple[str, ...] = field(default_factory=tuple)
    # What the finding is about (BE101: the dataset read), for code that words it anew for its
    # own context; never rendered, and not part of the finding's identity.
    subject: str | None = field(default=None, compare=False)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def with_hint(self, *hints: str) -> Diagnostic:
        return replace(self, hints=self.hints + tuple(h for h in hints if h))

    def location(self) -> str:
        if not self.path:
            return "buildenv"
        parts = [self.path]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)

    def to_text(self) -> str:
        head = f"{self.location()}: {self.severity.value}[{self.code}]: {self.message}"
        return "\n".join([head, *(f"  hint: {h}" for h in self.hints)])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["subject"]
        data["severity"] = self.severity.value
        data["hints"] = list(self.hints)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnostic:
        return cls(
            code=data["code"], message=data["message"], path=data.get("path"),
            line=data.get("line"), col=data.get("col"),
            severity=Severity(data.get("severity", "error")),
            hints=tuple(data.get("hints") or ()),
        )


class DiagnosticError(Exception):
    """Raised to stop a command; carries every problem found so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic], exit_code: int = 1):
        self.diagnostics = sort_diagnostics(diagnostics)
        self.exit_code = exit_code
        super().__init__("\n".join(d.to_text() for d in self.diagnostics))


def _sort_key(d: Diagnostic) -> tuple[str, int, int, str, str]:
    return (d.path or "", d.line or 0, d.col or 0, d.code, d.message)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by file and position, duplicates dropped (a parent's error seen via two children)."""
    return sorted(set(diagnostics), key=_sort_key)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean" hint, or None when nothing is close."""
    import difflib

    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


# --- renderings -------------------------------------------------------------

def render(diagnostics: Sequence[Diagnostic], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=2)
    if fmt == "sarif":
        return json.dumps(to_sarif(diagnostics), indent=2)
    return "\n".join(d.to_text() for d in diagnostics)


_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}


def to_sarif(diagnostics: Sequence[Diagnostic]) -> dict[str, Any]:
    """SARIF 2.1.0, the format CI code scanning annotates pull requests with."""
    from buildenv.core.codes import CODES

    used = sorted({d.code for d in diagnostics})
    rules = [
        {
            "id": code,
            "name": CODES[code].title if code in CODES else code,
            "shortDescription": {"text": CODES[code].title if code in CODES else code},
            "fullDescription": {"text": CODES[code].explanation if code in CODES else code},
        }
        for code in used
    ]
    results = []
    for d in diagnostics:
        result: dict[str, Any] = {
            "ruleId": d.code,
            "ruleIndex": used.index(d.code),
            "level": _SARIF_LEVEL[d.severity],
            "message": {"text": "\n".join([d.message, *(f"hint: {h}" for h in d.hints)])},
        }
        if d.path:
            region: dict[str, Any] = {}
            if d.line is not None:
                region["startLine"] = d.line
                if d.col is not None:
                    region["startColumn"] = d.col
            location: dict[str, Any] = {"artifactLocation": {"uri": d.path}}
            if region:
                location["region"] = region
            result["locations"] = [{"physicalLocation": location}]
        results.append(result)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "buildenv",
                        "version": __version__,
                        "informationUri": "https://github.com/buildenv/buildenv",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
