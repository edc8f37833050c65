"""Ending a process whose work is done, without the interpreter's teardown.

A training, a transform or `buildenv lock` has imported scikit-learn, pandas, pyarrow or
pydantic; freeing every one of their modules at exit takes half a second on a quiet machine and
seconds under load, after the result is written and while the build (or the user) waits. What
exit must still do is kept: exit handlers run (logging's flush, a user's or a coverage tool's
`atexit`), and the standard streams are flushed; only the teardown of modules is skipped.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

__all__ = ["leave"]


def leave(code: int) -> NoReturn:
    """Exit handlers, then the standard streams' flush, then `os._exit(code)`."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):  # closed, or a closed pipe
                pass
        os._exit(code)
