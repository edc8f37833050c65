"""The lock's side of label sets computed by labeling functions: their `source` record and what
makes it stale.

A computed label set is pinned like an export (the digest of the Parquet file buildenv writes)
plus a `source` record: each labeling function's digest (`core.code.function_digests`: its own
source, the module's shared code and the repository modules it imports), the repository files
the functions read as they ran (`files_read`, `read_files`), the digest of the dataset it
labeled, the label model and the digest of its fitted arrays. `labels_staleness` compares the
record with the code and data now and names what changed: which functions, which files read,
which dataset files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buildenv.core.code import code_files, function_digests
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.lock.derived import Pinned
from buildenv.data.lock.manifest import describe_diff
from buildenv.data.lock.read_files import changes, declared, pinnable, recorded_reads
from buildenv.env.resolve import Resolved

__all__ = ["DECORATOR", "MODEL_VERSIONS", "declared_files", "labels_staleness", "model_version"]

DECORATOR = "labeling_function"

MODEL_VERSIONS = {"majority": 1, "generative": 2}
"""Each label model's algorithm (`labels.label_model`), numbered. The lock records the number
when above 1 (locks of the first algorithms stay as they were), so that a buildenv whose model
gives other labels for the same votes says the set is stale instead of calling its code
non-deterministic. generative 2: abstaining is one of a function's answers; 3 (`model_version`,
only for a set with a `gold` set: the others fit as 2 did): the gold prior counts only the gold
examples the dataset holds."""


def model_version(source: Any) -> int:
    """The algorithm number of a computed label set's `source` (its model and gold)."""
    if source.model == "generative" and source.gold is not None:
        return 3
    return MODEL_VERSIONS[source.model]


def declared_files(project: Project, res: Resolved, name: str) -> list[str]:
    """The files label set `name` declares its functions read (`source.files`' matches), but
    modules, data and state."""
    source = res.env.labels[name].source
    assert source is not None
    if not source.files:
        return []
    return pinnable(project, res.env, code_files(project, source.functions),
                    declared(project.root, source.files)[0])


def labels_staleness(project: Project, res: Resolved, name: str, pinned: Any,
                     current: Mapping[str, Pinned], locked: Mapping[str, Any]
                     ) -> list[Diagnostic]:
    """BE875: the functions or the data of computed label set `name` changed since it was
    locked; `pinned` is its lock entry, `current` the datasets' pins now, `locked` the lock's
    dataset entries."""
    spec = res.env.labels[name]
    assert spec.source is not None
    record = pinned.source or {}
    # what the relock runs: a changed or added function, on every file; a removed one, nothing
    hint = (f"run `buildenv lock {res.name}`: only the changed and added functions run again "
            "(on every file); removing one runs nothing",)
    problems = []
    now = function_digests(project, spec.source.functions, DECORATOR) or {}
    was: dict[str, str] = record.get("functions") or {}
    changed = sorted(n for n in set(now) & set(was) if now[n] != was[n])
    added, removed = sorted(set(now) - set(was)), sorted(set(was) - set(now))
    parts = ([f"changed: {', '.join(changed)}"] if changed else []) + (
        [f"added: {', '.join(added)}"] if added else []) + (
        [f"removed: {', '.join(removed)}"] if removed else [])
    if parts:
        problems.append(res.diag("BE875", f"label set '{name}' is stale: its labeling functions "
                                 f"changed since it was locked ({'; '.join(parts)})", "labels",
                                 name, "source", "functions", hints=hint))
    was_read = recorded_reads(record)
    read = changes(project.root, was_read) + [
        f"code file {p} now exists" for p in declared_files(project, res, name) if p not in was_read]
    if read:
        problems.append(res.diag("BE875", f"label set '{name}' is stale: {', '.join(read)} "
                                 "since it was locked (its labeling functions read it)",
                                 "labels", name, "source", "functions",
                                 hints=(f"run `buildenv lock {res.name}`: its functions run "
                                        "again",)))
    was_version, now_version = record.get("model_version", 1), model_version(spec.source)
    if record.get("model") == spec.source.model and was_version != now_version:
        known = isinstance(was_version, int) and not isinstance(was_version, bool)
        why = (f"fitted by algorithm {was_version}, and this buildenv fits algorithm "
               f"{now_version} (other labels for the same votes)" if known and
               was_version < now_version else
               f"fitted by algorithm {was_version!r}, which this buildenv does not know (it "
               f"fits algorithm {now_version}): a newer buildenv wrote the lock, or it was edited")
        problems.append(res.diag(
            "BE875", f"label set '{name}' is stale: its label model '{spec.source.model}' was "
            f"{why}", "labels", name, "source", "model",
            hints=("run `buildenv lock` to refit the model with this buildenv's algorithm (no "
                   "function runs again), or use the buildenv that wrote the lock",)))
    digest = record.get("dataset")
    now_pin = current.get(spec.dataset)
    if now_pin is not None and digest is not None and now_pin.digest != digest:
        was_pin = locked.get(spec.dataset)
        what = ""
        if was_pin is not None and was_pin.digest == digest and was_pin.manifest is not None \
                and now_pin.manifest is not None:
            what = f": {describe_diff(*was_pin.manifest.diff(now_pin.manifest))}"
        problems.append(res.diag("BE875", f"label set '{name}' is stale: dataset "
                                 f"'{spec.dataset}' changed since it was labeled{what}",
                                 "labels", name, "dataset",
                                 hints=(f"run `buildenv lock {res.name}`: every function runs "
                                        "again on the added and changed files only",)))
    return problems
