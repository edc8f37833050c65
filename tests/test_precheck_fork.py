"""The pre-check in a forked process beside the full fit (training/precheck_fork.py): the full
fit trains as after a serial pre-check (same seeds, same artifact bytes), the sample run's
state stays in the child, a verdict that stops the build interrupts the fit, and forking is
refused where it is not safe (another thread running, restricted data) or where the fit leaves
no core free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from familyrepo import make_family_repo
from test_families import build, run

pytestmark = pytest.mark.slow
# the child needs a core the fit leaves free (`threads = 1` and a second core)
forks = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no fork")

# The same model twice: `probe` is pre-checked in a forked process; `probe-threaded` starts a
# thread when imported, so forking is not safe and the runner pre-checks it itself, first.
PROBE = """
import random
import threading
import time

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

SAMPLE_RUNS = []

if THREADED:
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "n1", "y"])
    if len(df) <= 2000:
        SAMPLE_RUNS.append(len(df))
    ctx.log_metric("sample_runs_seen", len(SAMPLE_RUNS))
    ctx.log_metric("numpy_draw", np.random.random())
    ctx.log_metric("python_draw", random.random())
    model = Pipeline([("impute", SimpleImputer()), ("clf", LogisticRegression())])
    # weights from the global generator: the model's bytes depend on the seeds it started from
    return model.fit(df[["x1", "x2", "n1"]], df["y"],
                     clf__sample_weight=np.random.uniform(0.5, 1.5, len(df)))
"""

FORBIDDEN_IN_SAMPLE = """
import time


def train(ctx):
    df = ctx.read("items", columns=["x1", "y"])
    if len(df) <= 2000:  # only the sample run reads it: the full run would sleep for minutes
        ctx.read("items", columns=["".join(["no", "pe"])])  # not a literal: found at run time
    time.sleep(600)
"""

EXTRA = """
[tool.buildenv.trainings.probe]
entry = "train/probe.py:train"
environments = ["sk"]
threads = 1

[tool.buildenv.trainings.probe-threaded]
entry = "train/probe_threaded.py:train"
environments = ["sk"]
threads = 1

[tool.buildenv.trainings.secret-slow-forked]
entry = "train/secret_slow.py:train"
environments = ["sk"]
threads = 1
timeout = 120

[tool.buildenv.trainings.forbidden-in-sample]
entry = "train/forbidden_in_sample.py:train"
environments = ["sk"]
threads = 1
timeout = 120
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_family_repo(tmp_path_factory.mktemp("fork") / "repo")
    (root / "train" / "probe.py").write_text("THREADED = False\n" + PROBE)
    (root / "train" / "probe_threaded.py").write_text("THREADED = True\n" + PROBE)
    (root / "train" / "forbidden_in_sample.py").write_text(FORBIDDEN_IN_SAMPLE)
    with open(root / "pyproject.toml", "a") as pyproject:
        pyproject.write(EXTRA)
    code, _, err = run(root, "lock")
    assert code == 0, err
    return root


@forks
def test_forked_precheck_trains_as_the_serial_one_and_keeps_its_state(repo, tmp_path):
    lineages, models = {}, {}
    for training in ("probe", "probe", "probe-threaded"):
        out = tmp_path / f"{training}-{len(models.get(training, []))}"
        code, _, err = build(repo, training, "sk", "--out", str(out))
        assert code == 0, err
        lineages[training] = json.loads((out / "buildenv.json").read_text())
        models.setdefault(training, []).append((out / "model.skops").read_bytes())
    forked, serial = lineages["probe"], lineages["probe-threaded"]
    assert forked["precheck"] == serial["precheck"] == {"rows": 2000, "status": "passed"}
    # the sample run's module state stayed in the forked process; the serial one left it here
    assert forked["metrics"]["sample_runs_seen"] == 0
    assert serial["metrics"]["sample_runs_seen"] == 1
    # the full fit drew the same numbers from the same seeds: the same model, byte for byte
    for name in ("numpy_draw", "python_draw"):
        assert forked["metrics"][name] == serial["metrics"][name]
    assert models["probe"][0] == models["probe"][1] == models["probe-threaded"][0]


@forks
def test_a_refusal_from_the_forked_precheck_stops_the_full_fit(repo):
    started = time.monotonic()
    code, _, err = build(repo, "secret-slow-forked", "sk")  # the full fit would sleep 600 s
    assert code == 1 and time.monotonic() - started < 110, err
    source = (repo / "train/secret_slow.py").read_text().splitlines()
    line = next(i for i, t in enumerate(source, 1) if '"secret", "y"' in t)
    assert "error[BE401]: model input 'secret' is training-only in environment sk" in err
    assert f"hint: the training reads it at train/secret_slow.py:{line}, and the model takes " \
        "it as an input" in err


@forks
def test_a_failure_of_the_forked_sample_run_stops_the_full_fit(repo):
    started = time.monotonic()
    code, _, err = build(repo, "forbidden-in-sample", "sk")  # the full fit would sleep 600 s
    assert code == 1 and time.monotonic() - started < 110, err
    assert "error[BE303]: column(s) 'nope' not declared in dataset 'items'" in err
    assert "BE302" not in err


SCRIPT = r"""
import json, os, random, signal, sys, threading, time
from types import SimpleNamespace

import numpy as np

from buildenv.training import precheck_fork

case = sys.argv[1]
env = SimpleNamespace(datasets={"a": None, "b": None},
                      restricted=lambda name: case == "restricted" and name == "b")
random.seed(1)
np.random.seed(1)
if case == "thread":
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()


def work():
    if case == "raises":
        raise RuntimeError("boom")
    if case == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid(), "numpy": np.random.random(), "python": random.random()}


forked = precheck_fork.start(env, 1 if case != "busy" else os.cpu_count(), work)
if forked is None:
    print(json.dumps(None))
    sys.exit(0)
verdict = forked.verdict()
forked.stop()  # after the verdict: nothing left to stop
print(json.dumps({"verdict": verdict, "pid": os.getpid(), "numpy": np.random.random(),
                  "python": random.random()}))
"""


def _fork_case(case: str):
    threads = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT, env={**os.environ, **threads})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@forks
def test_the_forked_child_draws_from_its_own_generators():
    found = _fork_case("plain")
    child = found["verdict"]
    assert child["pid"] != found["pid"]
    # the child drew first, from copies: the parent's next draws are the first after seeding
    assert (found["numpy"], found["python"]) == (child["numpy"], child["python"])


@forks
def test_a_child_without_a_verdict_is_a_skipped_precheck():
    assert _fork_case("raises")["verdict"]["summary"] == {
        "status": "skipped", "rows": 2000,
        "reason": "the pre-check's process ended with exit code 1"}
    assert _fork_case("killed")["verdict"]["summary"]["reason"] == \
        "the pre-check's process ended with signal 9"


@pytest.mark.parametrize("case", ["thread", "restricted", "busy"])
def test_no_fork_where_it_is_not_safe(case):
    assert _fork_case(case) is None


DISTRIBUTIONS_SCRIPT = r"""
import json, sys
from importlib import metadata
from types import SimpleNamespace
from buildenv.training import installed, precheck_fork

env = SimpleNamespace(datasets={}, restricted=lambda name: False)
forked = precheck_fork.start(env, 1, lambda: {"summary": {"status": "passed"}})
if forked is None:
    print(json.dumps(None))
    sys.exit(0)
verdict = forked.verdict()
adopted = bool(installed._ADOPTED)  # before anything here read the table itself
print(json.dumps({"verdict": verdict, "adopted": adopted,
                  "same": installed.distributions_by_package() == metadata.packages_distributions(),
                  "read_here": installed._read.cache_info().currsize}))
"""


@forks
def test_the_forked_child_reads_the_installed_distributions_for_the_fit_process():
    """The table `installed` serves comes from the child's core, not from a thread beside the
    fit: the verdict is unchanged, and this process never reads the metadata itself."""
    threads = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTIONS_SCRIPT], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, **threads})
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["verdict"] == {"summary": {"status": "passed"}}
    assert found["adopted"] and found["same"] and found["read_here"] == 0


def test_adopt_takes_only_a_table_of_names():
    from buildenv.training import installed

    for bad in (None, [], {"x": "y"}, {"x": [1]}, {1: ["a"]}):
        assert installed.adopt(bad) is False
