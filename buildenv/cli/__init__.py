"""The `buildenv` command line (SPEC §6): one module per room of the package.

`app` is the typer application; importing the command modules registers their commands.
"""

from __future__ import annotations

import signal

# isort: off
# Registration order is the order of `buildenv --help`: the pipeline's.
from buildenv.cli import env_commands  # noqa: F401
from buildenv.cli import data_commands  # noqa: F401
from buildenv.cli import access_commands  # noqa: F401
from buildenv.cli import labels_commands  # noqa: F401
from buildenv.cli import compile_commands  # noqa: F401
from buildenv.cli import monitor_commands  # noqa: F401
from buildenv.cli import release_commands  # noqa: F401
from buildenv.cli import import_commands  # noqa: F401
# isort: on
from buildenv.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C: the training's process group is
    # killed, temp dirs are removed, an unfinished retrain is restored.
    signal.signal(signal.SIGTERM, _terminated)
    app(prog_name="buildenv")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
