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

from buildenv.core.leave import leave

__all__ = ["app", "main", "run"]

# Commands that leave no thread, temp file or library behind that needs the interpreter's exit
# handlers: `run` ends them without the teardown (freeing pydantic's, numpy's and pyarrow's
# modules costs a tenth of a second and more after the work is done).
_QUICK_EXIT = frozenset({"lock"})
# Libraries whose exit handlers stop what they started (Ray's local cluster): when one was
# imported (`lock --executor ray`), the command exits the ordinary way.
_EXIT_HANDLERS = ("ray", "mlflow")

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


def run() -> None:
    """The `buildenv` program (`python -m buildenv`, the console script): `main`; for the
    commands of `_QUICK_EXIT`, the process ends as soon as its output is flushed."""
    if len(sys.argv) < 2 or sys.argv[1] not in _QUICK_EXIT:
        main()
        return
    try:
        main()
        code = 0
    except SystemExit as exc:
        if not (exc.code is None or isinstance(exc.code, int)):
            raise  # a message: the interpreter prints it
        code = exc.code or 0
    if any(name in sys.modules for name in _EXIT_HANDLERS):
        sys.exit(code)
    leave(code)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    run()
