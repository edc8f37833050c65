"""Row-free comparison of the data two locks pin: which version each pins, how many rows and
files, and how many files they share -- from the manifests, without reading a row. `buildenv
diff` shows it under the environments' differences (a data branch against production), `show
--explain` the pinned version of each table."""

from __future__ import annotations

from typing import Any

from buildenv.data.lock.lockfile import Lock, LockedDataset

__all__ = ["compare_locks", "pinned_text"]


def pinned_text(entry: LockedDataset) -> str:
    """'snapshot 123 (ref exp), 80 rows in 6 files' / 'sha256:ab12cd34ef56, 60 rows'."""
    what = entry.version_label or entry.digest[:19]
    files = f" in {len(entry.manifest.files)} files" if entry.manifest is not None else ""
    rows = "rows withheld" if entry.rows is None else f"{entry.rows:,} rows"
    return f"{what}, {rows}{files}"


def compare_locks(a: Lock | None, b: Lock | None) -> list[dict[str, Any]]:
    """One entry per dataset whose pins differ: both versions and, for manifests, the files
    they share and those only one has (counted; paths are not shown: a restricted dataset's
    could say something)."""
    if a is None or b is None:
        return []
    out = []
    for name in sorted(set(a.datasets) & set(b.datasets)):
        old, new = a.datasets[name], b.datasets[name]
        if old.digest == new.digest:
            continue
        item: dict[str, Any] = {"dataset": name, "a": pinned_text(old), "b": pinned_text(new),
                      "rows": [old.rows, new.rows]}
        if old.manifest is not None and new.manifest is not None:
            mine = {(f.path, f.digest) for f in old.manifest.files}
            theirs = {(f.path, f.digest) for f in new.manifest.files}
            item["files"] = {"shared": len(mine & theirs), "only_a": len(mine - theirs),
                             "only_b": len(theirs - mine)}
        out.append(item)
    return out
