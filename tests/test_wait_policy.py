"""The training process's OpenMP wait policy: OpenMP's own (fast) default on an idle machine,
PASSIVE on a busy one or beside other trainings, the user's when set."""

from __future__ import annotations

import os

import pytest

from buildenv.compile import launch
from buildenv.compile.launch import child_env, wait_policy


@pytest.mark.parametrize("threads, load, cores, expected", [
    (2, 0.05, 2, None),  # idle two-core machine, a two-thread fit: spin (OpenMP default)
    (1, 0.9, 2, None),  # one busy core, a one-thread fit: a core is still free
    (2, 1.2, 2, "PASSIVE"),  # another job holds a core the fit would spin on
    (1, 3.0, 2, "PASSIVE"),
    (8, 0.0, 4, "PASSIVE"),  # more threads than cores
])
def test_passive_only_when_the_cores_are_not_free(threads, load, cores, expected):
    assert wait_policy(threads, load=load, cores=cores) == expected


def test_child_env_follows_the_load_and_counts_trainings_beside_it(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(launch.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert "OMP_WAIT_POLICY" not in child_env(1, cores)
    assert child_env(1, cores, others=cores)["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setattr(launch.os, "getloadavg", lambda: (cores + 1.0, 0.0, 0.0))
    assert child_env(1, 1)["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice is kept
    assert child_env(1, 1)["OMP_WAIT_POLICY"] == "ACTIVE"


def test_running_threads_are_counted_and_released():
    first = launch._RUNNING.add(2)
    second = launch._RUNNING.add(3)
    assert second == first + 2
    launch._RUNNING.remove(3)
    launch._RUNNING.remove(2)
    assert launch._RUNNING.add(0) == first
