"""What the data gate raises when it refuses or cannot complete a read."""

from __future__ import annotations

from buildenv.core.diagnostics import Diagnostic

__all__ = ["GateError"]


class GateError(Exception):
    """A read the gate refused or could not complete; `diagnostic` says why, safely."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic
