"""`buildenv lock` of unchanged environments, answered before typer and pydantic are imported.

The full command's start-up (typer, pydantic, the environment models, resolving `extends`)
costs about a quarter of a second before it finds, most of the time, that the environments did
not change (and often the data neither). `buildenv.data.lock.quick` keeps a plan of the last
lock that found no problem; this module parses the command line the full command would (a
plain `lock [ENV...]` with `--root`, `--algorithm`, `--quiet`, `--progress/--no-progress`,
`--format text`; anything else, `--help` included, is left to it), finds the project as it
would, and, when the plan answers, prints what it would (the locks the plan wrote anew
`updated`, the others `unchanged`). When it does not (an environment file
that says something the plan cannot validate without the models, data it cannot judge), `run` returns None, having printed nothing and
written no lock; then `run_full` runs the full lock of the same plain command line without
typer (`lock_command`: typer and its conversion of the parameters are a tenth of that start-up),
and any other command line (`--check`, `--help`, another flag) goes to typer. Both are off with
`BUILDENV_NO_QUICK_LOCK=1`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from buildenv.cli import progress_view
from buildenv.cli.lock_command import lock, summary
from buildenv.cli.outcome import Format, guarded
from buildenv.core import progress as tasks
from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.roots import find_root, require_project
from buildenv.data.lock.quick import relock

__all__ = ["run", "run_full", "summary"]

_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--progress": "progress",
          "--no-progress": "no-progress"}
_VALUED = ("--root", "--algorithm", "--format")


def _parse(args: list[str]) -> tuple[list[str], dict[str, str]] | None:
    names: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _FLAGS:
            options[_FLAGS[arg]] = "1"
        elif arg.startswith("--") and arg.partition("=")[0] in _VALUED:
            key, eq, value = arg.partition("=")
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            options[key] = value
        elif arg.startswith("-") or not arg:
            return None  # --help, --check, --executor, an unknown flag: the full command's
        else:
            names.append(arg)
        i += 1
    return names, options


@dataclass(frozen=True)
class _Plain:
    """A plain `buildenv lock` command line, as the full command would read it."""

    names: list[str]
    root: str | None  # --root
    algorithm: str
    progress: bool | None
    quiet: bool


def _plain(argv: list[str]) -> _Plain | None:
    """`argv` read as a plain lock (see the module), else None."""
    if len(argv) < 1 or argv[0] != "lock" or os.environ.get("BUILDENV_NO_QUICK_LOCK"):
        return None
    parsed = _parse(argv[1:])
    if parsed is None:
        return None
    names, options = parsed
    algorithm = options.get("--algorithm", "sha256")
    if algorithm not in ("sha256", "blake3") or options.get("--format", "text") != "text":
        return None
    if "progress" in options and "no-progress" in options:
        return None  # the last one wins in the full command: not worth repeating here
    if "--root" in options and not options["--root"]:
        return None  # an empty path: as typer reads it
    progress = True if "progress" in options else False if "no-progress" in options else None
    return _Plain(names, options.get("--root"), algorithm, progress, "quiet" in options)


def run_full(argv: list[str]) -> int | None:
    """Run `buildenv <argv>`, a plain lock (`_plain`) the plan did not answer, as the full
    command, without typer: 0, or its exit code raised (SystemExit); None for any other command
    line (typer's)."""
    plain = _plain(argv)
    if plain is None:
        return None
    root = Path(plain.root) if plain.root is not None else None
    guarded(lambda: lock(plain.names or None, root, plain.algorithm, False, None, Format.text,
                         plain.progress, plain.quiet), Format.text)
    return 0


def run(argv: list[str]) -> int | None:
    """Answer `buildenv <argv>` if it is a lock the plan answers: prints what the full
    command prints, returns its exit code (0); else None, having printed (and written a lock)
    nothing."""
    plain = _plain(argv)
    if plain is None:
        return None
    names, algorithm, progress, quiet = plain.names, plain.algorithm, plain.progress, plain.quiet
    try:
        if plain.root is not None:
            root = Path(plain.root).resolve()
            require_project(root, "--root")
        else:
            root = find_root()
        folders = _folders(root)
        if folders is None:
            return None
        mode = progress_view.chosen_mode(progress, quiet)
        reporter = progress_view.renderer(sys.stderr, mode)
    except (DiagnosticError, ValueError, OSError):
        return None  # the full command says what is wrong
    with tasks.installed(reporter):
        try:
            found = relock(root, folders[0], folders[1], names, algorithm)
        except KeyboardInterrupt:
            raise
        except Exception:  # anything unexpected: the full command decides
            found = None
    if found is None:
        return None
    if not quiet:
        for env in found:
            print(summary(env.name, env.datasets, env.rows, env.changed))
    else:
        updated = sum(env.changed for env in found)
        print(f"{len(found)} lock(s): {updated} updated, {len(found) - updated} unchanged")
    return 0


def _folders(root: Path) -> tuple[Path, Path] | None:
    """(environments dir, state dir) from `[tool.buildenv]`; None when the configuration needs
    the full command (another executor, a table it would refuse)."""
    tool: object = {}
    path = root / "pyproject.toml"
    if path.is_file():
        try:
            tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get(
                "buildenv", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError):
            return None
    if not isinstance(tool, dict) or tool.get("executor", "local") != "local":
        return None
    env_dir, cache_dir = tool.get("environments_dir", "environments"), tool.get("cache_dir",
                                                                                ".buildenv")
    if not isinstance(env_dir, str) or not isinstance(cache_dir, str):
        return None
    return root / env_dir, root / cache_dir
