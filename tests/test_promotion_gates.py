"""The promotion gates (`release.gates`), without a registry: for each direction, where the
bounds fall (a value exactly at a bound passes), what a regression is measured against, when
the regression gate does not apply, and where each failure points in the environment file."""

from __future__ import annotations

import pytest
from conftest import BASE_YAML, write_repo

from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.release.gates import CHECK_PREFIX, Evaluation, Scored, _apply_gates


class Registry:
    """What the gates ask the registry: the tags of a model version."""

    def __init__(self, tags=None):
        self.tags = tags or {}

    def get_model_version(self, training, version):
        return type("Version", (), {"tags": self.tags})()


def resolved(tmp_path, promotion: str):
    root = write_repo(tmp_path / "repo", envs={"base": BASE_YAML + promotion})
    return Multiverse(Project.discover(root)).resolve("base")


def run(res, candidate, champion=None, champion_version="3", lineage=None, registry=None):
    ev = Evaluation("demo", "base", res.env.promotion, Scored("candidate", "4", None, candidate),
                    None if champion is None else Scored("champion", champion_version, None,
                                                         champion))
    _apply_gates(ev, registry or Registry(), {"model_digest": "sha256:x"}
                 if lineage is None else lineage, res)
    return ev


def gate(ev, name):
    return next(g for g in ev.gates if g.name == name)


@pytest.mark.parametrize("direction, value, passed", [
    ("maximize", 0.70, True), ("maximize", 0.6999, False), ("maximize", 0.9, True),
    ("minimize", 0.70, True), ("minimize", 0.7001, False), ("minimize", 0.1, True),
])
def test_min_value_bounds_by_direction(tmp_path, direction, value, passed):
    res = resolved(tmp_path, f"promotion: {{metric: roc_auc, direction: {direction}, "
                             "min_value: 0.7}\n")
    ev = run(res, value)
    g = gate(ev, "min_value")
    assert (g.passed, g.limit) == (passed, (">= 0.7" if direction == "maximize" else "<= 0.7"))
    assert ev.passed is passed
    if not passed:
        (d,) = ev.diagnostics
        bound = "below the minimum" if direction == "maximize" else "above the maximum"
        assert d.code == "BE701" and f"is {bound} 0.7" in d.message
        assert (d.path, d.line) == ("environments/base.yaml", BASE_YAML.count("\n") + 1)
        assert d.hints == ("the champion stays unset",)


@pytest.mark.parametrize("direction, candidate, champion, worse_by, passed", [
    ("maximize", 0.78, 0.80, "0.0200", True),  # exactly the allowed regression
    ("maximize", 0.7799, 0.80, "0.0201", False),
    ("maximize", 0.90, 0.80, "0.0000", True),  # better: no regression
    ("minimize", 0.42, 0.40, "0.0200", True),
    ("minimize", 0.4201, 0.40, "0.0201", False),
])
def test_max_regression_against_the_champion(tmp_path, direction, candidate, champion,
                                             worse_by, passed):
    res = resolved(tmp_path, f"promotion: {{metric: m, direction: {direction}, "
                             "max_regression: 0.02}\n")
    ev = run(res, candidate, champion)
    g = gate(ev, "max_regression")
    assert (g.limit, g.actual, g.passed) == ("<= 0.02", worse_by, passed)
    if not passed:
        (d,) = ev.diagnostics
        assert d.code == "BE702" and d.message.startswith(f"m regressed by {worse_by}: ")
        assert "champion v3 has" in d.message and d.hints == ("the champion stays v3",)


@pytest.mark.parametrize("champion, version", [(None, "3"), (0.9, "4")])
def test_no_regression_gate_without_another_champion(tmp_path, champion, version):
    """No champion yet, or the candidate already is the champion: nothing to regress from."""
    res = resolved(tmp_path, "promotion: {metric: m, max_regression: 0.0}\n")
    ev = run(res, 0.1, champion, champion_version=version)
    assert [g.name for g in ev.gates] == ["required_check:validate", "required_check:verify"]


@pytest.mark.parametrize("tags, actual, passed", [
    ({CHECK_PREFIX + "drift": "passed"}, "passed", True),
    ({CHECK_PREFIX + "drift": "failed"}, "failed", False),
    ({}, "not run", False),
    (None, "not run", False),  # the registry does not answer: not run
])
def test_required_checks_come_from_the_version_tags(tmp_path, tags, actual, passed):
    res = resolved(tmp_path, "promotion: {metric: m, required_checks: [drift]}\n")
    ev = run(res, 0.5, registry=Registry(tags) if tags is not None else _Silent())
    g = gate(ev, "required_check:drift")
    assert (g.actual, g.passed) == (actual, passed)
    if not passed:
        assert [d.code for d in ev.diagnostics] == ["BE707"]


class _Silent(Registry):
    def get_model_version(self, training, version):
        raise RuntimeError("the registry is down")


def test_validate_and_verify_hold_when_the_build_made_an_artifact(tmp_path):
    res = resolved(tmp_path, "promotion: {metric: m}\n")
    assert all(g.passed for g in run(res, 0.5).gates)
    failed = run(res, 0.5, lineage={})
    assert [(g.name, g.actual, g.passed) for g in failed.gates] == [
        ("required_check:validate", "missing", False), ("required_check:verify", "missing", False)]
    assert [d.code for d in failed.diagnostics] == ["BE707", "BE707"]
