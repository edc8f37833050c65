"""The `buildenv` command line (SPEC §6): one module per room of the package.

`app` is the typer application (`application`); importing the command modules registers
their commands.
`main` imports them only once it knows the command needs them: a `buildenv lock` of unchanged
environments is answered before (`quick_lock`), in a tenth of the start-up.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

__all__ = ["app", "main"]

# Deferred imports (buildenv): the command modules bring typer; `main` answers an unchanged
# `buildenv lock` without them, and `app` (an attribute of this package) imports them when asked.


def main() -> None:
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C: the training's process group is
    # killed, temp dirs are removed, an unfinished retrain is restored.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from buildenv.cli import quick_lock

        code = quick_lock.run(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if code is not None:
        sys.exit(code)
    # Not answered from the lock's plan: `buildenv lock` starts hashing now, while the imports
    # below run (early.py says why; the plan's answer hashes without reading the YAML).
    from buildenv.cli import early

    early.start(sys.argv)
    _commands()(prog_name="buildenv")


def _commands() -> Any:
    """The typer application with every command registered."""
    # isort: off
    # Registration order is the order of `buildenv --help`: the pipeline's.
    from buildenv.cli import init_commands  # noqa: F401
    from buildenv.cli import env_commands  # noqa: F401
    from buildenv.cli import data_commands  # noqa: F401
    from buildenv.cli import store_commands  # noqa: F401
    from buildenv.cli import access_commands  # noqa: F401
    from buildenv.cli import labels_commands  # noqa: F401
    from buildenv.cli import compile_commands  # noqa: F401
    from buildenv.cli import monitor_commands  # noqa: F401
    from buildenv.cli import release_commands  # noqa: F401
    from buildenv.cli import import_commands  # noqa: F401
    # isort: on
    from buildenv.cli.application import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from buildenv.cli import app`: the application, commands registered
        return _commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
