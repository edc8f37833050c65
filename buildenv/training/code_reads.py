"""The repository files user code reads: part of its code, though not modules.

A transform that loads `config/regions.yaml`, or labeling functions that read a word list,
compute something else when that file changes, exactly as when their module changes. The
build's code digest covers the modules it finds by parsing imports; this recorder, installed
in the process that runs code-made sources, finds the rest as the code runs: an audit hook
notes each path opened for reading (`open`, `io.open`, `os.open`, `Path.read_text`: every one
raises the `open` event) that lies inside the repository, unless buildenv itself opened it on
the code's behalf (a `ctx.read` through the data gate: data is an input, never code). The
build (`compile.derive`) drops what it digests otherwise (modules, data, its own state) and pins
the rest with the output.

Limits: a file read by native code (pyarrow opening a path itself, a C extension) raises no
audit event, nor does listing a directory; such a file is unseen. An audit hook cannot be
removed: it stays installed for the life of this dedicated process, recording only while a
job runs (`recording`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CodeReads"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_BYTECODE = (".pyc", ".pyo")


class CodeReads:
    """One recorder per process (`installed`); `recording()` gathers the paths of one job."""

    _installed: CodeReads | None = None

    def __init__(self, root: Path, own: Path):
        self.root = str(root)
        self._root = self.root.rstrip(os.sep) + os.sep
        # buildenv's own package: as given, and as this process imported it (a toolchain's
        # runner imports it through a link, and a frame names the path it was imported by)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._own = tuple(sorted({str(own).rstrip(os.sep) + os.sep, here.rstrip(os.sep) + os.sep}))
        # the interpreter's trees (a virtualenv inside the repository): libraries, not code
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
        self._libraries = tuple(p.rstrip(os.sep) + os.sep for p in prefixes if p)
        self._state = self._root + ".buildenv" + os.sep
        self._paths: set[str] | None = None

    @classmethod
    def installed(cls, root: Path, own: Path) -> CodeReads:
        """The process's recorder, its audit hook installed on first use."""
        if cls._installed is None or cls._installed.root != str(root):
            recorder = cls(root, own)
            if cls._installed is None:
                sys.addaudithook(CodeReads._dispatch)
            cls._installed = recorder
        return cls._installed

    @staticmethod
    def _dispatch(event: str, args: tuple) -> None:
        recorder = CodeReads._installed
        if event != "open" or recorder is None or recorder._paths is None:
            return
        try:
            recorder._open(args)
        except Exception:  # an audit hook's error would break the audited call
            pass

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Record while the block runs; the list holds the paths read (repository-relative,
        `/`-separated, sorted) once it ends."""
        found: list[str] = []
        self._paths = set()
        try:
            yield found
        finally:
            paths, self._paths = self._paths, None
            found.extend(sorted(paths))

    @classmethod
    def noted(cls) -> list[str]:
        """What the process's recording holds so far, sorted (in a forked child: the parent's
        until the fork and the child's since); [] when nothing records."""
        recorder = cls._installed
        if recorder is None or recorder._paths is None:
            return []
        return sorted(recorder._paths)

    @classmethod
    def note(cls, paths: Iterable[str]) -> None:
        """Add to the recording what a forked child of this process read (the pre-check's
        sample run: its reads would otherwise end with it)."""
        recorder = cls._installed
        if recorder is not None and recorder._paths is not None:
            recorder._paths.update(p for p in paths if isinstance(p, str))

    def _open(self, args: tuple) -> None:
        path, mode, flags = (args + (None, None))[:3]
        if path is None or isinstance(path, int):  # a descriptor: opened before, by path
            return
        if (flags and flags & _WRITE_FLAGS) or (isinstance(mode, str) and
                                               any(c in mode for c in "wax+")):
            return
        full = os.path.abspath(os.fsdecode(path))
        if not full.startswith(self._root):
            full = os.path.realpath(full)  # a link into the repository is still its file
            if not full.startswith(self._root):
                return
        if full.endswith(_BYTECODE) or full.startswith(self._state) or \
                full.startswith(self._libraries) or self._by_buildenv(full.endswith(".py")):
            return
        assert self._paths is not None
        self._paths.add(full[len(self._root):].replace(os.sep, "/"))

    def _by_buildenv(self, source: bool) -> bool:
        """Whether buildenv opened the file (the data gate reading an input, the loader
        importing the code's module) rather than the user's code: the innermost frame that is
        buildenv's or the repository's says which. A Python `source` file the import system
        opens (a package's `__init__.py` as the code imports a module of it) is a module
        loaded, not a file read: whether it is opened in this recording depends on what the
        process imported before (a training started early), so noting it would make the
        record, and the artifact's key, differ between two builds of the same inputs."""
        frame: Any = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            frame = frame.f_back
            if name == __file__:  # this recorder's own frames
                continue
            if source and name.startswith("<frozen importlib._bootstrap"):
                return True
            if name.startswith(self._own):
                return True
            if name.startswith(self._root) and not name.startswith(self._libraries):
                return False
        return False
