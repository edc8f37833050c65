"""What makes a build reusable: its cache key, the artifact store and the failure cache.

The cache key covers everything that determines the artifact's bytes: code digest (the entry
module and the repository modules it imports), resolved-environment digest, dataset digests,
seed, threads, the sandbox policy, buildenv's version, and the training's toolchain: the
digest of its lock and the version of every distribution in it (known before the training
runs, so a changed library rebuilds, and the reason names it). The repository files the
training read as it ran (a `config/params.yaml`; `training.code_reads`) are code too: known
only after a run, their digests join the code digest (`with_reads`), and the paths a run with
the same other inputs read are remembered (`remember_reads`) so that the next build can hash
them before running. Entries live under `.buildenv/cache/builds/<k[:2]>/<k>/`; failures that
depend only on the inputs are remembered under `.buildenv/cache/failures/`, with the files the
failed run read: replayed only while those are unchanged.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

from buildenv import __version__
from buildenv.compile.artifact import (
    UNHASHED,
    tree_digest,
)
from buildenv.core.atomic import atomic_dir, atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.code import code_files as module_files
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project, TrainingConfig
from buildenv.data.lock.read_files import changes, differences, recorded_reads
from buildenv.env.resolve import Resolved
from buildenv.toolchain.toolchain import Toolchain

__all__ = ["CACHED_FAILURE", "cache_key_parts", "cached_failure", "code_files", "explain_rebuild",
           "failure_file", "intact", "known_reads", "library_changes", "remember_failure",
           "remember_reads", "save_to_cache", "store", "with_reads"]


def code_files(project: Project, config: TrainingConfig) -> dict[str, str]:
    """The training module and the repository modules it imports, by digest."""
    return module_files(project, config.module_path)


def cache_key_parts(project: Project, training: str, config: TrainingConfig, res: Resolved,
                    dataset_digests: dict[str, str], toolchain: Toolchain,
                    label_pins: dict[str, dict] | None = None,
                    sandbox: dict | None = None) -> dict:
    files = code_files(project, config)
    extra: dict = {"labels": dict(sorted(label_pins.items()))} if label_pins else {}
    if config.card_text():  # absent when unused, so older keys stay valid
        extra["card"] = digest_json(config.card_text())
    if sandbox is not None:  # what the training may reach can change what it builds
        extra["sandbox"] = sandbox
    return {**extra,
        "code_digest": digest_json({"files": files, "entry": config.entry}),
        "environment_digest": res.digest,
        "datasets": dict(sorted(dataset_digests.items())),
        "seed": config.seed,
        "threads": config.native_threads,
        "buildenv": __version__,
        "python": platform.python_version(),
        "toolchain": toolchain.digest,
        "libraries": dict(toolchain.packages),
    }


def with_reads(parts: dict, files_read: dict[str, str | None]) -> dict:
    """The key's parts once the files the training reads are known: their digests join the
    code digest, and are kept beside it for `explain_rebuild` to name. With none, `parts`
    unchanged: the key of a training that reads no file is what it always was."""
    if not files_read:
        return parts
    read = dict(sorted(files_read.items()))
    return {**parts, "code_digest": digest_json({"code": parts["code_digest"],
                                                 "files_read": read}), "files_read": read}


def _reads_file(project: Project, hexbase: str) -> Path:
    return project.state_dir / "cache" / "reads" / hexbase[:2] / f"{hexbase}.json"


def remember_reads(project: Project, hexbase: str, paths: list[str]) -> None:
    """The files the last run read, under the key of every other input (`hexbase`): what the
    next build hashes to find its key before running."""
    try:
        atomic_write_text(_reads_file(project, hexbase), json.dumps(sorted(paths)))
    except OSError:
        pass  # a cache that cannot be written is only slower


def known_reads(project: Project, hexbase: str) -> list[str] | None:
    """The files the last run with the inputs `hexbase` read; None when none is known."""
    try:
        found = json.loads(_reads_file(project, hexbase).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, list) or not all(isinstance(p, str) for p in found):
        return None
    return sorted(found)


def explain_rebuild(previous: dict | None, parts: dict) -> str:
    """Why a pair is rebuilt, by the cheapest difference first."""
    if previous is None:
        return "not built before"
    old = previous.get("cache_parts") or {}
    if old.get("code_digest") != parts["code_digest"]:
        changed = sorted(set((previous.get("code_files") or {}).items()) ^ set(
            (parts.get("_files") or {}).items()))
        names = sorted({name for name, _ in changed})
        said = [f"code changed ({', '.join(names)})"] if names else []
        said += differences(recorded_reads(old), parts.get("files_read") or {})
        return ", ".join(said) or "code changed"
    if old.get("datasets") != parts["datasets"]:
        names = sorted(k for k in set(old.get("datasets", {})) | set(parts["datasets"])
                       if old.get("datasets", {}).get(k) != parts["datasets"].get(k))
        return ", ".join(f"dataset '{n}' changed" for n in names)
    if old.get("labels") != parts.get("labels"):
        names = sorted(k for k in set(old.get("labels") or {}) | set(parts.get("labels") or {})
                       if (old.get("labels") or {}).get(k) != (parts.get("labels") or {}).get(k))
        return ", ".join(f"label set '{n}' changed" for n in names)
    if old.get("environment_digest") != parts["environment_digest"]:
        return "environment changed"
    if old.get("libraries") != parts["libraries"]:
        return library_changes(old.get("libraries") or {}, parts["libraries"],
                               set(previous.get("libraries") or {}))
    if old.get("card") != parts.get("card"):
        return "model card text changed"
    for key in ("seed", "threads", "buildenv", "python", "toolchain"):
        if old.get(key) != parts[key]:
            return f"{key} changed"
    if old.get("sandbox") != parts.get("sandbox"):
        return "sandbox policy changed"
    return "artifact missing or modified"


def library_changes(old: dict[str, str], new: dict[str, str], first: set[str] | None = None,
                    limit: int = 4) -> str:
    """`library xgboost changed (3.2.0 -> 2.1.4)`, ..., for the few that differ: those in
    `first` (the libraries the model's classes came from) before the rest."""
    changes = []
    for name in sorted(set(old) | set(new), key=lambda n: (n not in (first or ()), n)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"library {name} added ({after})")
        elif after is None:
            changes.append(f"library {name} removed (was {before})")
        else:
            changes.append(f"library {name} changed ({before} -> {after})")
    more = len(changes) - limit
    return ", ".join(changes[:limit]) + (f" and {more} more" if more > 0 else "")


def store(project: Project) -> Path:
    return project.state_dir / "cache" / "builds"


CACHED_FAILURE = "failed before with the same inputs"


# Failures that depend only on the inputs; a timeout or a crash may not recur, so is retried.
# (BE414 is not: a latency over budget is a measurement.)
_DETERMINISTIC = ("BE301", "BE303", "BE304", "BE322", "BE323", "BE324", "BE327", "BE356",
                  "BE401", "BE402", "BE403", "BE404", "BE405", "BE406", "BE407", "BE408",
                  "BE409", "BE411", "BE412", "BE413", "BE415", "BE416", "BE417", "BE418")


def failure_file(project: Project, hexkey: str) -> Path:
    return project.state_dir / "cache" / "failures" / hexkey[:2] / f"{hexkey}.json"


def remember_failure(project: Project, hexkey: str, found: list[Diagnostic],
                      use_cache: bool, multiverse_digest: str | None = None,
                      files_read: dict[str, str | None] | None = None) -> None:
    """Cache a failure that will recur with the same inputs. `multiverse` is the digest of
    every environment when the diagnostics' hints name other environments ("it is supported
    in: ..."): the record is replayed only while that digest is unchanged; and only while the
    repository files the failed run read (`files_read`, path -> digest) are unchanged."""
    errors = [d for d in found if d.is_error]
    if not use_cache or not errors or any(d.code not in _DETERMINISTIC for d in errors):
        return

    record: dict = {"diagnostics": [d.to_json() for d in found],
                    "multiverse": multiverse_digest}
    if files_read:
        record["files_read"] = dict(sorted(files_read.items()))
    try:
        atomic_write_text(failure_file(project, hexkey), json.dumps(record))
    except OSError:
        pass


def cached_failure(project: Project, hexkey: str, multiverse_digest: str) -> list[Diagnostic] | None:
    """The remembered diagnostics, unless the record is unreadable, its hints are stale or a
    file the failed run read has changed since."""
    try:
        record = json.loads(failure_file(project, hexkey).read_text())
        if not isinstance(record, dict):  # an older format, without the multiverse digest
            return None
        if record.get("multiverse") not in (None, multiverse_digest):
            return None
        if changes(project.root, recorded_reads(record)):
            return None
        return [Diagnostic.from_json(d) for d in record["diagnostics"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def intact(directory: Path, lineage: dict) -> bool:
    return tree_digest(directory, exclude=UNHASHED) == lineage.get("model_digest")


def save_to_cache(source: Path, entry: Path, scratch: Path | None = None) -> None:
    try:
        with atomic_dir(entry, scratch) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    except OSError:
        pass  # a cache that cannot be written is only slower
