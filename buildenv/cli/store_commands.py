"""Commands about the object store: push, pull, checkout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from buildenv.cli.application import Format, FormatOpt, RootOpt, app, command, finish, open_project

if TYPE_CHECKING:
    from buildenv.data.transfer import Transfer

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


def _size(n: int) -> str:
    """`27 B`, `4.3 KiB`, `1.2 GiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _moved(done: Transfer, verb: str, present: str, fmt: Format) -> None:
    if fmt is Format.text:
        print(f"{verb} {done.moved} object(s) ({_size(done.size)}); {done.present} {present}")
    finish(done.problems, fmt)


@app.command("push")
@command
def push_cmd(envs: Optional[list[str]] = typer.Argument(None, help="Environments whose pinned "
                                                        "bytes to push (default: all)."),
             root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Copy the pinned bytes the locks keep to the shared store (`[tool.buildenv] store`)."""
    from buildenv.data.transfer import push
    from buildenv.env.resolve import Multiverse

    _moved(push(Multiverse(open_project(root)), list(envs) if envs else None), "pushed",
           "already in the store", fmt)


@app.command("pull")
@command
def pull_cmd(envs: Optional[list[str]] = typer.Argument(None, help="Environments whose pinned "
                                                        "bytes to fetch (default: all)."),
             root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Fetch the pinned bytes the local store lacks from the shared store, verified."""
    from buildenv.data.transfer import pull
    from buildenv.env.resolve import Multiverse

    _moved(pull(Multiverse(open_project(root)), list(envs) if envs else None), "pulled",
           "already here", fmt)


@app.command("checkout")
@command
def checkout_cmd(env: str = typer.Argument(..., help="Environment whose pinned bytes to "
                                           "restore."),
                 root: Optional[Path] = RootOpt, fmt: Format = FormatOpt) -> None:
    """Restore the bytes an environment's lock pins at its datasets' local paths."""
    from buildenv.data.transfer import checkout
    from buildenv.env.resolve import Multiverse

    done = checkout(Multiverse(open_project(root)), env)
    if fmt is Format.text:
        print(f"{env}: restored {done.moved} file(s) ({_size(done.size)}); {done.present} "
              "already as locked")
    finish(done.problems, fmt)
