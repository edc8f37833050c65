"""Where a build writes, and who may write there at the same time.

One build of a pair at a time: `pair_mutex` is a cross-process mutex on the output directory,
held from the up-to-date check to registration, so a second identical build waits and then
finds the first one's artifact up to date (it reuses it, nothing is trained twice). A
directory given with `--out` is replaced only when it is new, empty, or an unmodified
buildenv artifact: buildenv never deletes files it did not write (BE767).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from buildenv.compile.artifact import read_lineage
from buildenv.compile.cache import intact
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.mutex import mutex, mutex_path, mutex_timeout
from buildenv.core.project import Project
from buildenv.core.tempdirs import scratch_dir

__all__ = ["check_out_dir", "pair_mutex", "scratch"]


def scratch(project: Project) -> Path:
    """`.buildenv/tmp/`: where builds stage their temp dirs (swept when the owner is gone)."""
    return scratch_dir(project.state_dir)


@contextmanager
def pair_mutex(project: Project, training: str, env: str, out: Path,
              timeout: float | None = None) -> Iterator[None]:
    """Exclusive use of `out` for one build; waits up to the training's time limit + 5 min."""
    config = project.trainings.get(training)
    limit = (timeout or (config.timeout if config else 3600.0)) + 300.0
    with mutex(mutex_path(project.state_dir, "build", str(out.resolve())),
                   f"another build of {training} @ {env} into {project.rel(out)}",
                   mutex_timeout(limit)):
        yield


def check_out_dir(project: Project, out: Path) -> None:
    """Refuse to replace a directory holding anything but an unmodified buildenv artifact."""
    if not out.exists():
        return
    if not out.is_dir():
        raise _foreign(project, out, "it is a file")
    if not any(out.iterdir()):
        return
    lineage = read_lineage(out)
    if lineage is None:
        raise _foreign(project, out, "it holds files and no buildenv.json")
    if not intact(out, lineage):
        raise _foreign(project, out, "its files differ from what buildenv wrote there")


def _foreign(project: Project, out: Path, why: str) -> DiagnosticError:
    return DiagnosticError([Diagnostic(
        "BE767", f"--out {project.rel(out)} would replace a directory buildenv did not write "
        f"({why}); nothing was deleted",
        hints=("choose a new or empty directory, or remove it yourself",))], 2)
