"""The `buildenv` command line (SPEC §6): one module per room of the package.

`app` is the typer application; importing the command modules registers their commands.
"""

from __future__ import annotations

import signal
import sys

# isort: off
# `buildenv lock` starts hashing now, while the imports below run (early.py says why).
from buildenv.cli import early

early.start(sys.argv)
# Registration order is the order of `buildenv --help`: the pipeline's.
from buildenv.cli import init_commands  # noqa: E402, F401
from buildenv.cli import env_commands  # noqa: E402, F401
from buildenv.cli import data_commands  # noqa: E402, F401
from buildenv.cli import store_commands  # noqa: E402, F401
from buildenv.cli import access_commands  # noqa: E402, F401
from buildenv.cli import labels_commands  # noqa: E402, F401
from buildenv.cli import compile_commands  # noqa: E402, F401
from buildenv.cli import monitor_commands  # noqa: E402, F401
from buildenv.cli import release_commands  # noqa: E402, F401
from buildenv.cli import import_commands  # noqa: E402, F401
# isort: on
from buildenv.cli.app import app  # noqa: E402

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
