"""Bytecode for sandboxed trainings: the store's cache filled from outside the sandbox.

A toolchain's runner keeps its bytecode in the store (`PYTHONPYCACHEPREFIX`). Sandboxed, it can
only read that cache (one training must not plant code another runs), so a training whose
imports are not cached yet compiles them from source on every build: seconds of CPU for a
scikit-learn or PyTorch stack. The runner lists what it imported from source
(`uncached_sources`); the build, outside the sandbox, compiles those files into the cache
(`fill_cache`) with the toolchain's own interpreter. Compiling runs no code of the files, and
only files of the interpreter's own trees are compiled (never the repository, never data), so
what the cache gains is exactly the bytecode of sources every later run reads anyway.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MAX_FILES", "fill_cache", "uncached_sources"]

MAX_FILES = 50_000  # a list longer than any real stack's is not trusted
_TIMEOUT = 600.0
_COMPILE = ("import py_compile, sys\n"
            "for line in sys.stdin:\n"
            "    try:\n"
            "        py_compile.compile(line.rstrip('\\n'), doraise=True)\n"
            "    except Exception:\n"
            "        pass\n")


def uncached_sources() -> list[str]:
    """The source files of the modules this process imported whose bytecode is not in its
    cache: empty unless bytecode writing is off and a cache prefix is set (a sandboxed
    toolchain run)."""
    if not sys.dont_write_bytecode or not sys.pycache_prefix:
        return []
    out = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        try:
            if not os.path.exists(importlib.util.cache_from_source(path)):
                out.append(path)
        except (ValueError, NotImplementedError):
            continue
    return sorted(out)[:MAX_FILES]


def fill_cache(python: str, env: dict[str, str], roots: Iterable[str],
               sources: Iterable[object]) -> int:
    """Compile `sources` that lie in `roots` into the cache `env["PYTHONPYCACHEPREFIX"]` with
    `python` (the toolchain's interpreter: its bytecode format). Best effort: a cache that
    stays cold costs time, never correctness. The number of files handed to the compiler."""
    prefix = env.get("PYTHONPYCACHEPREFIX")
    if not prefix:
        return 0
    trees = [Path(os.path.abspath(r)) for r in roots if r]
    files = []
    for item in list(sources)[:MAX_FILES]:
        if not isinstance(item, str) or not item.endswith(".py") or "\n" in item:
            continue
        path = Path(os.path.abspath(item))
        if any(path.is_relative_to(tree) for tree in trees) and path.is_file():
            files.append(str(path))
    if not files:
        return 0
    child = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:  # -I: no user site, no PYTHON* variables; the cache is named on the command line
        subprocess.run([python, "-I", "-X", f"pycache_prefix={prefix}", "-c", _COMPILE],
                       input="\n".join(files) + "\n", text=True, env=child, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return len(files)
