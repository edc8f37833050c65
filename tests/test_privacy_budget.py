"""The privacy budget ledger: exact stops, shared scopes across versions, concurrent spenders,
crashes mid-write, damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from buildenv.access.budget import BudgetExceeded, Ledger, scope_of
from buildenv.core.diagnostics import DiagnosticError
from buildenv.env.spec import Environment

ENV = {"name": "e", "datasets": {"users": {"uri": "u.parquet", "columns": {"x": {"dtype":
       "int64"}}}, "waves": {"uri": "w.parquet", "columns": {"x": {"dtype": "int64"}}}},
       "privacy": {"restricted": ["users", "waves"], "epsilon_budget": 1.0,
                   "budget_per_version": ["waves"]}}


def test_spending_stops_exactly_at_the_budget(tmp_path):
    ledger = Ledger(tmp_path)
    for _ in range(4):
        ledger.spend(scope="users", epsilon=0.25, budget=1.0, dataset="users")
    with pytest.raises(BudgetExceeded) as info:
        ledger.spend(scope="users", epsilon=0.25, budget=1.0, dataset="users")
    assert (info.value.spent, info.value.left) == (1.0, 0.0)
    assert len(ledger.records()) == 4  # the refused request spent nothing


def test_tenths_add_up_to_one(tmp_path):
    ledger = Ledger(tmp_path)
    for _ in range(10):
        ledger.spend(scope="s", epsilon=0.1, budget=1.0)
    with pytest.raises(BudgetExceeded):
        ledger.spend(scope="s", epsilon=1e-6, budget=1.0)


def test_a_new_version_shares_the_budget_unless_policy_says_so():
    env = Environment.model_validate(ENV)
    assert scope_of(env, "users", "sha256:aa") == scope_of(env, "users", "sha256:bb") == "users"
    assert scope_of(env, "waves", "sha256:aa") == "waves@sha256:aa"
    assert scope_of(env, "waves", "sha256:bb") == "waves@sha256:bb"


def test_scopes_are_separate(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.spend(scope="waves@sha256:aa", epsilon=1.0, budget=1.0)
    ledger.spend(scope="waves@sha256:bb", epsilon=1.0, budget=1.0)
    assert ledger.spent("waves@sha256:aa") == 1.0 and ledger.spent("users") == 0.0


def test_a_torn_last_line_is_no_spend_and_is_cut_off(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.spend(scope="s", epsilon=0.5, budget=1.0)
    with open(ledger.path, "ab") as handle:
        handle.write(b'{"scope": "s", "epsilon": 0.')
    assert ledger.spent("s") == 0.5
    ledger.spend(scope="s", epsilon=0.5, budget=1.0)
    assert [r["epsilon"] for r in ledger.records()] == [0.5, 0.5]
    assert ledger.path.read_bytes().endswith(b"}\n")


@pytest.mark.parametrize("damage", [b"not json\n", b'{"scope": "s", "epsilon": -1}\n',
                                    b'{"scope": "s"}\n'])
def test_a_damaged_ledger_stops_releases(tmp_path, damage):
    ledger = Ledger(tmp_path)
    ledger.spend(scope="s", epsilon=0.5, budget=1.0)
    with open(ledger.path, "ab") as handle:
        handle.write(damage)
    with pytest.raises(DiagnosticError) as info:
        ledger.spend(scope="s", epsilon=0.1, budget=1.0)
    diag = info.value.diagnostics[0]
    assert diag.code == "BE819" and diag.line == 2 and info.value.exit_code == 1


def _spender(folder: str, attempts: int, queue) -> None:
    ledger = Ledger(Path(folder))
    won = 0
    for _ in range(attempts):
        try:
            ledger.spend(scope="users", epsilon=0.07, budget=1.0)
            won += 1
        except BudgetExceeded:
            pass
    queue.put(won)


def test_many_processes_spending_at_once_never_exceed_the_budget(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_spender, args=(str(tmp_path), 6, queue)) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    won = sum(queue.get(timeout=10) for _ in workers)
    assert won == 14  # floor(1.0 / 0.07): 48 attempts, exactly 14 fit
    ledger = Ledger(tmp_path)
    assert len(ledger.records()) == 14 and ledger.spent("users") <= 1.0


SPEND_LOOP = """
import sys
from pathlib import Path
from buildenv.access.budget import BudgetExceeded, Ledger
ledger = Ledger(Path(sys.argv[1]))
while True:
    try:
        ledger.spend(scope="s", epsilon=0.001, budget=0.5, pad="x" * 4000)
    except BudgetExceeded:
        break
"""


def test_killing_spenders_at_random_points_leaves_a_sound_ledger(tmp_path):
    """Crash safety: SIGKILL at random moments; the ledger stays readable, within budget, and
    every complete record survives."""
    import random

    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SPEND_LOOP, str(tmp_path)], env=env)
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        records = Ledger(tmp_path).records()  # raises BE819 if a crash damaged it
        assert sum(r["epsilon"] for r in records) <= 0.5 + 1e-9
    ledger = Ledger(tmp_path)
    before = len(ledger.records())
    ledger.spend(scope="s", epsilon=0.0, budget=0.5)  # a writer after the crashes still works
    assert len(ledger.records()) == before + 1
    lines = ledger.path.read_bytes().splitlines()
    assert all(json.loads(line)["scope"] == "s" for line in lines)
