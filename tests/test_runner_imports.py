"""The transform runner's modules import no pydantic and no config or environment models.

The transforms' process (`training.sources_runner`) starts on the critical path of a small
rebuild; pydantic and the models it builds are most of its imports after pandas. The modules
that run transforms and labeling functions name `Project`, `Environment`, `Dataset` and
`Column` only in annotations, so importing them must not bring pydantic in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from sourcerepo import source_fixtures

_progress, template, locked = source_fixtures("runner_imports")

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


def test_the_early_runner_prepares_without_pydantic() -> None:
    """What the transforms' process imports while it waits for its request."""
    code = ("import sys\nfrom buildenv.training import sources_runner\n"
            "sources_runner._prepare()\n"
            f"print(__import__('json').dumps(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY[:2]!r} or m in {HEAVY[2:]!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


# What the transforms' process has no use for before (or, on the happy path, after) its
# request: the table of every diagnostic code (only SARIF renders it), "did you mean" hints,
# and the training's own runner (the scikit-learn process's modules, installed packages'
# metadata). Each was milliseconds of that process's start-up, the one-file rebuild's
# critical path.
UNUSED = ("buildenv.core.codes", "difflib", "importlib.metadata", "buildenv.training.runner",
          "buildenv.training.skops_table")


def test_the_early_runner_prepares_without_what_it_never_uses() -> None:
    code = ("import sys\nfrom buildenv.training import sources_runner\n"
            "sources_runner._prepare()\n"
            f"print(__import__('json').dumps(sorted(m for m in sys.modules if m in {UNUSED!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


RUN = """\
import json, sys
from pathlib import Path
from buildenv.training import sources_runner
request = json.loads(Path(sys.argv[1]).read_text())
result = sources_runner.run(request)
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {light!r} or m in {models!r})
print(json.dumps({{"result": result, "heavy": heavy}}))
"""


@pytest.fixture
def request_sent(locked: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The request `buildenv lock` sends the transforms' process after the transform changed."""
    from conftest import invoke_cli

    sent: list[str] = []
    write_text = Path.write_text

    def keep(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.name == "request.json":
            sent.append(data)
        return write_text(self, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", keep)
    module = locked / "transforms" / "daily.py"
    module.write_text(module.read_text() + "\n# changed\n")
    code, _, err = invoke_cli(["lock", "ev"], locked)
    assert code == 0 and len(sent) == 1, err
    return json.loads(sent[0])


@pytest.mark.parametrize("described", [True, False])
def test_a_transform_runs_from_the_builds_description_without_pydantic(
        request_sent: dict, locked: Path, tmp_path: Path, described: bool) -> None:
    """The request carries the inputs' environment and the project's paths: the runner
    imports no pydantic and no models, and writes the bytes the model's path writes."""
    request = dict(request_sent)
    if not described:  # the model's path (labeling functions; a value JSON cannot hold)
        request["views"] = [None] * len(request["jobs"])
    out = tmp_path / "out"
    out.mkdir()
    for job in request["jobs"]:
        for i, item in enumerate(job["files"]):
            item["out"] = str(out / f"{i}.parquet")
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    code = RUN.format(light=HEAVY[:2], models=HEAVY[2:])
    # in the repository, as the runner runs: this buildenv on the path (under Pants, the
    # test's sandbox holds it and sys.path's entries are relative to it)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True, cwd=locked, env=env)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["result"]["ok"], answer["result"]
    assert (answer["heavy"] == []) is described, answer["heavy"]
    stored = locked / ".buildenv" / "derived" / "objects"
    objects = {p.read_bytes() for p in stored.rglob("*.parquet")}
    written = sorted(out.glob("*.parquet"))
    assert written and all(p.read_bytes() in objects for p in written)
