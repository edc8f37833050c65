"""Where in the user's code something happened: the innermost frame in a file of the
repository (not buildenv's own, not an installed library), and the user's calls that led there.
Diagnostics of the training process point at it."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import FrameType

__all__ = ["exception_frame", "current_frame"]

Located = tuple[str | None, int | None, list[str]]


def _is_user(filename: str, root: Path, own: Path) -> Path | None:
    if not os.path.isabs(filename):  # <frozen runpy>, Cython's pyarrow/error.pxi: not ours
        return None
    path = Path(filename).resolve()
    if path.is_relative_to(root) and not path.is_relative_to(own) and \
            ".venv" not in path.parts and "site-packages" not in path.parts:
        return path
    return None


def _located(frames: list[tuple[str, int | None, str]], root: Path, own: Path) -> Located:
    user = []
    for filename, line, name in frames:
        path = _is_user(filename, root, own)
        if path is not None:
            user.append((path.relative_to(root).as_posix(), line, name))
    if not user:
        return None, None, []
    trail = [f"{rel}:{line} in {name}" for rel, line, name in user]
    return user[-1][0], user[-1][1], trail


def exception_frame(exc: BaseException, root: Path, own: Path) -> Located:
    """(repo-relative path, line, trail of 'path:line in function', outermost first)."""
    return _located([(f.filename, f.lineno, f.name)
                     for f in traceback.extract_tb(exc.__traceback__)], root, own)


def current_frame(root: Path, own: Path, skip: int = 1) -> Located:
    """The same for the code running now (the caller's callers)."""
    frames = []
    frame: FrameType | None = sys._getframe(skip + 1)
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    frames.reverse()
    return _located(frames, root, own)
