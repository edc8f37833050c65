"""The `buildenv` command line (SPEC §6): one module per room of the package.

`app` is the typer application (`application`); importing the command modules registers
their commands.
`main` imports them only once it knows the command needs them: a `buildenv lock` of unchanged
environments is answered before (`quick_lock`), in a tenth of the start-up; any other command
named imports only its own module, and typer converts only its parameters (`_command`).
"""

from __future__ import annotations

import copy
import importlib
import signal
import sys
from typing import Any

from buildenv.cli import collector
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
# `buildenv lock` without them, and `app` (an attribute of this package) imports them when asked;
# `head_start` and `early` are imported by `main` first for a lock only, so no other command's
# start pays for them.


def main() -> None:
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C: the training's process group is
    # killed, temp dirs are removed, an unfinished retrain is restored.
    signal.signal(signal.SIGTERM, _terminated)
    if sys.argv[1:2] != ["lock"]:
        _main()
        return
    # `buildenv lock`: no cyclic collection while the command imports (collector.py says why);
    # the lock resumes it when its imports are done, any other way out here
    collector.pause()
    try:
        _main()
    finally:
        collector.resume(freeze=False)


def _main() -> None:
    # `buildenv lock`: a stale transform's process starts from the last build's recipe, and
    # the files the lock's plan pins start hashing, now, before the command's imports
    # (early.py and head_start.py say why and when).
    try:
        if sys.argv[1:2] == ["lock"]:
            from buildenv.cli import early, head_start

            early.start_from_recipe(sys.argv)
            head_start.start(sys.argv)
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
    if quick_lock.run_full(sys.argv[1:]) is not None:  # a plain lock: the full one, typer-free
        sys.exit(0)
    _command(sys.argv[1:])(prog_name="buildenv")


# The command modules, in the order of `buildenv --help` (the pipeline's), and the module of
# each command (tests/test_cli_startup.py checks it against what the modules register).
_MODULES = ("init_commands", "env_commands", "data_commands", "store_commands",
            "access_commands", "labels_commands", "compile_commands", "monitor_commands",
            "release_commands", "import_commands")
_HOMES = {
    **dict.fromkeys(("init",), "init_commands"),
    **dict.fromkeys(("envs", "show", "diff", "schema", "explain", "version"), "env_commands"),
    **dict.fromkeys(("lock", "validate", "audit"), "data_commands"),
    **dict.fromkeys(("push", "pull", "checkout"), "store_commands"),
    **dict.fromkeys(("stats", "synth", "peek"), "access_commands"),
    **dict.fromkeys(("labels", "tasks"), "labels_commands"),
    **dict.fromkeys(("check", "toolchain", "build", "register", "ui", "doctor", "card", "ops"),
                    "compile_commands"),
    **dict.fromkeys(("drift", "skew"), "monitor_commands"),
    **dict.fromkeys(("promote", "history", "rollback", "retrain", "image"), "release_commands"),
}


def _commands() -> Any:
    """The typer application with every command registered, in the order of `_MODULES`."""
    for module in _MODULES:
        importlib.import_module(f"buildenv.cli.{module}")
    from buildenv.cli.application import app

    # a module imported before the others (`_command`) registered its commands first
    order = {f"buildenv.cli.{m}": i for i, m in enumerate(_MODULES)}
    app.registered_commands.sort(key=lambda info: order.get(info.callback.__module__, 0)
                                 if info.callback is not None else 0)
    return app


def _command(argv: list[str]) -> Any:
    """The typer application to run `buildenv ARGV` with: when ARGV names a command, only that
    command registered (its module imported, its parameters converted), which typer parses,
    helps and runs as in the whole application; else the whole application (`--help`, a
    group, a typo typer suggests a command for)."""
    home = _HOMES.get(argv[0]) if argv else None
    if home is None:
        return _commands()
    importlib.import_module(f"buildenv.cli.{home}")
    from buildenv.cli.application import app

    found = [info for info in app.registered_commands if info.name == argv[0]]
    if len(found) != 1:
        return _commands()
    only = copy.copy(app)  # the shared application keeps every command it has
    only.registered_commands = found
    only.registered_groups = []
    return only


def __getattr__(name: str) -> Any:
    if name == "app":  # `from buildenv.cli import app`: the application, commands registered
        return _commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """The `buildenv` program (`python -m buildenv`, the console script): `main`; for the
    commands of `_QUICK_EXIT`, the process ends as soon as its output is flushed."""
    quick = len(sys.argv) >= 2 and sys.argv[1] in _QUICK_EXIT
    try:
        main()
        code = 0
    except SystemExit as exc:
        if not (exc.code is None or isinstance(exc.code, int)):
            raise  # a message: the interpreter prints it
        code = exc.code or 0
    if code == 130 and "ray" in sys.modules:
        # interrupted while Ray ran tasks: its exit handlers still stop the Ray it started
        # (`leave` runs them), but the interpreter's teardown of Ray's core worker, with tasks
        # cut short, died of SIGSEGV or SIGABRT in about a third of the interrupts under load
        # (exit 139 after "interrupted")
        leave(code)
    if not quick or any(name in sys.modules for name in _EXIT_HANDLERS):
        sys.exit(code)
    leave(code)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    run()
