"""`buildenv promote` / `history` / `rollback` against the embedded sqlite registry.

One repository and one MLflow store per module (store creation costs seconds): five builds
are registered up front (v1 clean data, v2 new clean data, v3 shuffled labels, v4 a bad label
backfill, v5 a model reading fewer columns), each artifact kept aside; every test starts from
an unset alias and empty history and puts the artifact it needs into dist/. The trainings only
return fitted models: the environment holds out its evaluation rows and promotion scores both
models on them (the current lock's data: v4's, whose evaluation rows are clean).
"""

from __future__ import annotations

import json
import re
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import invoke_cli
from services import events, make_churn_repo, reset_champion, write_events

from buildenv.compile.registry import client
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse
from buildenv.release import champion as champion_module
from buildenv.release.champion import champion_stack, history_entries, rollback
from buildenv.release.gates import alias_name

pytestmark = pytest.mark.slow

DIST = Path("dist/churn/prod")
ROWS = r"the (\d+) held-out rows \(20% of 'events' by key tenure, spend, plan, notes\)"
DATA = {"good1": events(1), "good2": events(2), "shuffled": events(3, shuffle_labels=True),
        "backfill": events(4, corrupt_basic=0.5)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_churn_repo(tmp_path_factory.mktemp("promote") / "repo")
    kept = {}
    for i, (name, frame) in enumerate(DATA.items(), start=1):
        write_events(root, "events-v1.parquet", frame)  # a new version lands at the same uri
        code, out, err = invoke_cli(["lock", "prod"], root)
        assert code == 0, err
        code, out, err = invoke_cli(["build", "churn", "--env", "prod"], root)
        assert code == 0, out + err
        assert f"registered churn v{i}" in out
        kept[name] = root / "kept" / name
        shutil.copytree(root / DIST, kept[name])
    train = root / "train.py"
    train.write_text(train.read_text().replace('FEATURES = ["tenure", "spend", "plan"]',
                                               'FEATURES = ["tenure", "plan"]').replace(
        '("numeric", StandardScaler(), ["tenure", "spend"])',
        '("numeric", StandardScaler(), ["tenure"])'))
    code, out, err = invoke_cli(["build", "churn", "--env", "prod"], root)
    assert code == 0 and "registered churn v5" in out, out + err
    kept["narrow"] = root / "kept" / "narrow"
    shutil.copytree(root / DIST, kept["narrow"])
    return {"root": root, "kept": kept}


@pytest.fixture
def repo(world: dict) -> Path:
    """Alias unset, history empty, dist/ empty."""
    root = world["root"]
    reset_champion(root)
    shutil.rmtree(root / DIST, ignore_errors=True)
    return root


def use(world: dict, name: str) -> None:
    """Make artifact `name` the one in dist/churn/prod."""
    root = world["root"]
    shutil.rmtree(root / DIST, ignore_errors=True)
    shutil.copytree(world["kept"][name], root / DIST)


def champion(root: Path) -> str | None:
    c = client(Project.discover(root))
    found = (c.get_registered_model("churn").aliases or {}).get("prod-champion")
    return None if found is None else str(found)


def promote(root: Path, *extra: str) -> tuple[int, str, str]:
    return invoke_cli(["promote", "churn", "--env", "prod", *extra], root)


def test_first_promotion_sets_alias_and_prints_the_comparison(world: dict, repo: Path) -> None:
    use(world, "good1")
    code, out, err = promote(repo)
    assert code == 0, err
    assert re.fullmatch(r"churn @ prod: val_auc \(maximize\), on " + ROWS, out.splitlines()[0])
    assert re.search(r"^candidate\s+v1\s+0\.\d{4}$", out, re.M)
    assert re.search(r"^champion\s+-\s+\(none yet\)$", out, re.M)
    assert re.search(r"^gate min_value >= 0\.65\s+0\.\d{4}\s+pass$", out, re.M)
    assert "prod-champion: unset -> v1 (history #1)" in err
    assert champion(repo) == "1"


def test_dry_run_evaluates_but_moves_nothing(world: dict, repo: Path) -> None:
    use(world, "good1")
    code, out, err = promote(repo, "--dry-run")
    assert code == 0, err
    assert "dry run: would move prod-champion to v1" in err
    assert champion(repo) is None


def test_new_champion_is_compared_on_the_environments_rows(world: dict, repo: Path) -> None:
    use(world, "good1")
    assert promote(repo)[0] == 0
    use(world, "good2")
    code, out, err = promote(repo, "--format", "json")
    assert code == 0, err
    ev = json.loads(out)["evaluation"]
    assert ev["source"] == "evaluation" and 200 < ev["rows"] < 300  # 20% of 1,200 events
    assert ev["candidate"]["version"] == "2" and ev["champion"]["version"] == "1"
    assert abs(ev["candidate"]["value"] - ev["champion"]["value"]) < 0.03
    assert champion(repo) == "2"
    # promoting the champion again is a no-op
    code, out, err = promote(repo)
    assert code == 0 and "churn v2 is already prod-champion" in err


def test_min_value_gate_fails_with_BE701_and_keeps_the_champion(world: dict, repo: Path) -> None:
    use(world, "good2")
    assert promote(repo)[0] == 0
    use(world, "shuffled")
    code, out, err = promote(repo)
    assert code == 1
    assert re.search(r"^environments/prod\.yaml:\d+:\d+: error\[BE701\]: val_auc 0\.[45]\d{3} "
                     r"of candidate churn v3 is below the minimum 0\.65 \(promotion\.min_value "
                     r"of prod\)\n  hint: the champion stays v2$", err, re.M), err
    assert re.search(r"^gate min_value >= 0\.65\s+0\.\d{4}\s+FAIL$", out, re.M)
    assert champion(repo) == "2"


def test_regression_gate_fails_with_BE702_naming_both_values(world: dict, repo: Path) -> None:
    use(world, "good2")
    assert promote(repo)[0] == 0
    use(world, "backfill")
    code, out, err = promote(repo)
    assert code == 1, out + err
    match = re.search(r"error\[BE702\]: val_auc regressed by (0\.\d{4}): candidate churn v4 has "
                      r"(0\.\d{4}), champion v2 has (0\.\d{4}) on " + ROWS + "; "
                      r"promotion\.max_regression of prod is 0\.03", err)
    assert match, err
    drop, cand, champ = map(float, match.groups()[:3])
    assert cand >= 0.65 and drop > 0.03 and abs(champ - cand - drop) < 2e-4
    assert "BE701" not in err
    assert champion(repo) == "2"


def test_history_and_rollback(world: dict, repo: Path) -> None:
    for name in ("good1", "good2"):
        use(world, name)
        assert promote(repo)[0] == 0
    code, out, err = invoke_cli(["history", "churn", "--env", "prod"], repo)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "churn @ prod: alias prod-champion -> v2"
    assert re.match(r"^1\s+promote\s+v1\s+-\s+val_auc=0\.\d{4}\s", lines[3])
    assert re.match(r"^2\s+promote\s+v2\s+v1\s+val_auc=0\.\d{4}\s", lines[4])
    code, out, _ = invoke_cli(["history", "churn", "--env", "prod", "--format", "json"], repo)
    data = json.loads(out)
    lineage = data["entries"][0]["lineage"]
    assert lineage["environment"] == "prod"
    assert lineage["datasets"]["events"].startswith("sha256:")
    assert lineage["cache_key"].startswith("sha256:")
    assert data["entries"][0]["lineage"]["datasets"] != data["entries"][1]["lineage"]["datasets"]

    code, out, err = invoke_cli(["rollback", "churn", "--env", "prod", "--dry-run"], repo)
    assert (code, out.strip()) == (0, "prod-champion: would move v2 -> v1")
    assert champion(repo) == "2"
    code, out, err = invoke_cli(["rollback", "churn", "--env", "prod"], repo)
    assert (code, out.strip()) == (0, "prod-champion: moved v2 -> v1")
    assert champion(repo) == "1"
    code, out, err = invoke_cli(["rollback", "churn", "--env", "prod"], repo)
    assert code == 1
    assert ("error[BE706]: no previous champion of churn for prod to roll back to (current: v1, "
            "3 history entries)") in err
    assert champion(repo) == "1"


def test_champion_stack_replays_promotions_and_rollbacks() -> None:
    def entries(*moves: tuple[str, str]) -> list[dict]:
        return [{"action": a, "version": v} for a, v in moves]

    assert champion_stack(entries(("promote", "1"), ("promote", "2"), ("promote", "3"),
                                  ("rollback", "2"))) == ["1", "2"]
    assert champion_stack(entries(("promote", "1"), ("promote", "2"), ("rollback", "1"),
                                  ("promote", "3"))) == ["1", "3"]
    assert champion_stack(entries(("rollback", "5"))) == ["5"]  # alias set by someone else


def test_models_reading_different_columns_are_compared_on_the_same_rows(
        world: dict, repo: Path) -> None:
    """The evaluation rows carry every served column: a champion reading `spend` and a
    candidate that does not are scored on exactly the same rows."""
    use(world, "good2")
    assert promote(repo)[0] == 0
    use(world, "narrow")
    code, out, err = promote(repo, "--dry-run", "--format", "json")
    ev = json.loads(out)["evaluation"]
    assert ev["candidate"]["version"] == "5" and ev["champion"]["version"] == "2"
    assert ev["candidate"]["value"] is not None and ev["champion"]["value"] is not None
    assert ev["candidate"]["value"] != ev["champion"]["value"]
    assert "BE708" not in err and "BE713" not in err


def test_a_metric_buildenv_does_not_compute_is_compared_as_logged(world: dict,
                                                                   repo: Path) -> None:
    env_file = repo / "environments" / "prod.yaml"
    saved = env_file.read_text()
    env_file.write_text(saved.replace("metric: val_auc", "metric: n_customers"))
    try:
        use(world, "good1")
        code, out, err = promote(repo, "--dry-run")
    finally:
        env_file.write_text(saved)
    assert code == 1
    assert "as logged by each training (their rows may differ)" in out
    assert ("warning[BE708]: buildenv does not compute 'n_customers'; comparing the "
            "'n_customers' values the trainings logged") in err
    assert "error[BE709]: metric 'n_customers' of candidate churn v1 is unavailable" in err


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` sees it."""


def _killed_at_write(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The registry client stops the command at its `n`-th write (1: the pending entry,
    2: the alias, 3: the entry unmarked)."""
    real = champion_module.client
    writes = [0]

    class Client:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name: str):
            attr = getattr(self.inner, name)
            if not name.startswith(("set_", "delete_")):
                return attr

            def write(*args, **kwargs):
                writes[0] += 1
                if writes[0] == n:
                    raise _Killed(name)
                return attr(*args, **kwargs)
            return write

    monkeypatch.setattr(champion_module, "client", lambda project: Client(real(project)))


def _chain(root: Path) -> list[tuple[str, str]]:
    """History as readers see it, checked against the alias: (action, version) per move."""
    entries = history_entries(client(Project.discover(root)), "churn", "prod")
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    for before, after in pairwise(entries):
        assert str(after["previous"]) == str(before["version"])
    assert champion(root) == (str(entries[-1]["version"]) if entries else None)
    assert all("pending" not in e for e in entries)
    return [(e["action"], str(e["version"])) for e in entries]


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_move_killed_between_its_writes_leaves_history_and_alias_agreeing(
        world: dict, repo: Path, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The registry has no transactions: whichever write a kill interrupts, readers see a
    history whose last entry is the alias, and the next move settles what was left."""
    from buildenv.release.gates import evaluate

    use(world, "good1")
    assert promote(repo)[0] == 0
    use(world, "good2")
    project = Project.discover(repo)
    ev = evaluate(project, Multiverse(project).resolve("prod"), "churn")
    with monkeypatch.context() as patch:
        _killed_at_write(patch, at)
        with pytest.raises(_Killed):
            champion_module.promote(project, ev)
    moved = at == 3  # the alias had moved: the move happened
    assert _chain(repo) == [("promote", "1")] + ([("promote", "2")] if moved else [])
    if moved:
        assert rollback(project, "churn", "prod")["seq"] == 3
        assert _chain(repo) == [("promote", "1"), ("promote", "2"), ("rollback", "1")]
    else:
        assert promote(repo)[0] == 0
        assert _chain(repo) == [("promote", "1"), ("promote", "2")]
    tags = client(project).get_registered_model("churn").tags
    assert not any('"pending"' in value for key, value in tags.items()
                   if key.startswith("buildenv.history."))


def test_no_artifact_is_BE703(world: dict, repo: Path) -> None:
    code, out, err = promote(repo)
    assert code == 1
    assert "error[BE703]: no artifact for churn @ prod at dist/churn/prod" in err
    assert "hint: run `buildenv build churn --env prod`" in err


def test_alias_name() -> None:
    assert alias_name("prod-2026-09") == "prod-2026-09-champion"
