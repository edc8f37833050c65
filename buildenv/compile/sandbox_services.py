"""What the build does for a sandboxed training besides handing over files: the privacy state
it cannot reach (the data's state directory is hidden from it).

`spend` records a private release in the privacy budget ledger: the build decides the scope
and the budget from the environment it built, accepts only this environment's restricted
datasets, and answers the entry, or what was left when the release does not fit. `release`
reads (no `data`) or writes (`data`) the remembered release of this build, under the key the
build chose (the training cannot name another build's).
"""

from __future__ import annotations

import errno
import json
import math
from typing import Any

from buildenv.access.budget import BudgetExceeded, Ledger, scope_of
from buildenv.core.atomic import atomic_write_text
from buildenv.core.project import Project
from buildenv.data.gate.broker import Service
from buildenv.env.spec import Environment

__all__ = ["privacy_services"]


def privacy_services(project: Project, env: Environment, release_key: str | None
                     ) -> dict[str, Service]:
    """The broker's `spend` and `release` for one training of `env`."""

    def spend(request: dict[str, Any]) -> dict[str, Any]:
        record = request.get("record")
        epsilon = request.get("epsilon")
        if not isinstance(record, dict) or not isinstance(epsilon, (int, float)) \
                or isinstance(epsilon, bool) or not math.isfinite(epsilon) or epsilon <= 0:
            return _refused("a spend needs a record and an epsilon > 0")
        dataset, digest = record.get("dataset"), record.get("digest")
        if not isinstance(dataset, str) or not isinstance(digest, str) \
                or dataset not in env.datasets or not env.restricted(dataset):
            return _refused("a spend names a dataset this environment does not restrict")
        try:
            entry = Ledger(project.data_state_dir).spend(
                scope=scope_of(env, dataset, digest), epsilon=float(epsilon),
                budget=env.privacy.budget(dataset), dataset=dataset, environment=env.name,
                digest=digest, purpose=str(record.get("purpose") or "evaluation"))
        except BudgetExceeded as exc:
            return {"ok": False, "exceeded": [exc.requested, exc.spent, exc.budget]}
        return {"ok": True, "entry": entry}

    def release(request: dict[str, Any]) -> dict[str, Any]:
        if not release_key:
            return {"ok": True, "data": None}  # nothing is remembered without a key
        # deferred on purpose: slice_dp (numpy, the slicing modules) is heavy, and every
        # `buildenv lock` imports this module through the launcher
        from buildenv.training.slice_dp import release_path

        path = release_path(project, release_key)
        data = request.get("data")
        if data is None:
            try:
                stored = json.loads(path.read_text()) if path.is_file() else None
            except ValueError:
                stored = None
            return {"ok": True, "data": stored}
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            return _refused("a release to remember needs its cells")
        atomic_write_text(path, json.dumps(data, sort_keys=True))
        return {"ok": True}

    return {"spend": spend, "release": release}


def _refused(why: str) -> dict[str, Any]:
    return {"ok": False, "errno": errno.EINVAL, "error": why}
