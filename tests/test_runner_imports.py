"""The transform runner's modules import no pydantic and no config or environment models.

The transforms' process (`training.sources_runner`) starts on the critical path of a small
rebuild; pydantic and the models it builds are most of its imports after pandas. The modules
that run transforms and labeling functions name `Project`, `Environment`, `Dataset` and
`Column` only in annotations, so importing them must not bring pydantic in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pydantic", "pydantic_core", "buildenv.core.project", "buildenv.env.spec")


@pytest.mark.parametrize("module", ["buildenv.training.derive_run", "buildenv.training.label_run",
                                    "buildenv.training.context", "buildenv.data.gate.gate",
                                    "buildenv.data.lock.derived"])
def test_the_runner_modules_import_no_pydantic(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(__import__('json').dumps(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY[:2]!r} or m in {HEAVY[2:]!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


def test_a_default_evaluation_in_the_narrowed_view() -> None:
    """`narrowed` makes the default evaluation from the environment's own class."""
    from buildenv.data.lock.derived import narrowed
    from buildenv.env.evaluation_spec import Evaluation
    from buildenv.env.spec import Environment

    env = Environment.model_validate({
        "name": "e", "datasets": {"a": {"uri": "a.csv", "columns": {"x": {"dtype": "int64"}}}},
        "evaluation": {"holdout": 0.3}})
    view = narrowed(env, ["a"])
    assert view.evaluation == Evaluation()
    assert view.evaluation != env.evaluation
