"""What a retrain must put back if it does not finish: saved files and a journal.

Before the first write, the files a retrain may rewrite (the lock, the environment file) are
copied into `.buildenv/retrain/<id>/` with a journal. Any stop restores them byte for byte; a
retrain killed midway is rolled back by the next one (the journal says what to restore).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from buildenv.compile.artifact import LINEAGE_FILE
from buildenv.core.atomic import atomic_write_bytes, install_dir
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project

__all__ = ["exclusive", "journal", "lineage_sha", "recover", "restore", "save", "swap",
           "work_root"]


def work_root(project: Project) -> Path:
    return project.state_dir / "retrain"


@contextlib.contextmanager
def exclusive(project: Project) -> Iterator[None]:
    """One retrain at a time per repository."""
    path = work_root(project) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DiagnosticError([Diagnostic(
                "BE711", "another `buildenv retrain` is running in this repository",
                hints=("wait for it; retrains of one repository run one at a time",))],
                1) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def journal(work: Path, data: dict) -> None:
    atomic_write_bytes(work / "journal.json", json.dumps(data, indent=2).encode())


def restore(project: Project, work: Path) -> list[str]:
    """Put back the files a retrain saved, or, once it was swapping its artifacts into dist/,
    finish the swaps; return what was restored or completed."""
    try:
        journal = json.loads((work / "journal.json").read_text())
    except (OSError, ValueError):
        shutil.rmtree(work, ignore_errors=True)
        return []
    restored = []
    if journal.get("phase") == "swapping":  # the new state is the committed one: finish it
        for item in journal.get("staged", []):
            staged, final = work / item["staged"], project.root / item["final"]
            if staged.is_dir() and not _swapped(final, item.get("digest")):
                install_dir(staged, final)  # killed before this swap: a lock without its
                restored.append(item["final"])  # artifact
    else:
        for item in journal.get("saved", []):
            target = project.root / item["path"]
            backup = work / item["backup"]
            if item.get("existed", True):
                atomic_write_bytes(target, backup.read_bytes())
            else:
                target.unlink(missing_ok=True)
            restored.append(item["path"])
    shutil.rmtree(work, ignore_errors=True)
    return restored


def _swapped(final: Path, digest: str | None) -> bool:
    """Is the staged artifact in `final` already? A swap exchanges the two directories, then
    deletes the old artifact from the staged place: killed in between, the staged place holds
    (part of) the old one, which must not be swapped back. `digest`: `lineage_sha` of the
    staged artifact (its lineage names the model's digest and everything it was built from)."""
    return digest is not None and digest == lineage_sha(final)


def lineage_sha(artifact: Path) -> str | None:
    """sha256 of an artifact's lineage file, None when it has none."""
    try:
        return "sha256:" + hashlib.sha256((artifact / LINEAGE_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


def recover(project: Project) -> list[str]:
    """Roll back retrains that were killed before they finished."""
    root = work_root(project)
    restored: list[str] = []
    if root.is_dir():
        for work in sorted(p for p in root.iterdir() if p.is_dir()):
            restored += restore(project, work)
    return restored


def save(project: Project, work: Path, paths: list[Path]) -> list[dict]:
    """Copy the files a retrain may rewrite, and journal how to put them back."""
    (work / "saved").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, path in enumerate(paths):
        backup = f"saved/{i}-{path.name}"
        if path.is_file():
            shutil.copy2(path, work / backup)
        entries.append({"path": path.resolve().relative_to(project.root).as_posix(),
                        "backup": backup, "existed": path.is_file()})
    journal(work, {"phase": "started", "saved": entries})
    return entries


def swap(staged: Path, final: Path) -> None:
    install_dir(staged, final)  # one exchange where the kernel can; no temp dir in dist/
