"""Where a `buildenv build` process spent its time, read from its status lines.

Outside a terminal (a Pants sandbox), `buildenv build` ends each pair that ran for a second or
more with one status line on stderr (docs/progress.md):

    recommender @ prod-2026-09: built in 61.2 s (check 0.30 s, validate 2.00 s, train 55.0 s)

`build_summary` finds that line for one pair; `package.py` reports it on the build's workunit
(message and metadata). No Pants imports here, so it is tested without the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_SECONDS = r"(\d+(?:\.\d+)?) s"
_PHASE = re.compile(r"([a-z][a-z ]*?) " + _SECONDS + r"(?:, |$)")


@dataclass(frozen=True)
class BuildSummary:
    line: str
    status: str  # built | cached | failed
    seconds: float
    timings: tuple[tuple[str, float], ...]  # (phase, seconds) in the order buildenv ran them

    def metadata(self) -> dict:
        return {"buildenv_status": self.status, "buildenv_seconds": self.seconds,
                "buildenv_timings": dict(self.timings)}


def build_summary(stderr: str, training: str, env: str) -> Optional[BuildSummary]:
    """The last summary line of pair `training @ env` in `stderr`, or None (a build under a
    second, or progress turned off)."""
    pattern = re.compile(re.escape(f"{training} @ {env}") + r": ([a-z][a-z-]*) in "
                         + _SECONDS + r"(?: \((.*)\))?$")
    for raw in reversed(stderr.splitlines()):
        line = raw.strip()
        match = pattern.match(line)
        if match is None:
            continue
        inner = match.group(3) or ""
        timings = tuple((name, float(seconds)) for name, seconds in _PHASE.findall(inner))
        return BuildSummary(line, match.group(1), float(match.group(2)), timings)
    return None
