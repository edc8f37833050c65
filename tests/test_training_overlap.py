"""The training process's work after the fit, overlapped: evaluation beside describing,
converting and saving the model, parity beside importance (`training.beside`,
`runner._Evaluation`), with what each side found merged in the serial order; and the installed
distributions' table read once per process. The end-to-end guarantee (every family's artifact
byte-identical across rebuilds) is `test_families.py::test_family_builds_and_rebuilds_byte_identical`.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from buildenv.training import runner
from buildenv.training.beside import Beside


def test_beside_gives_back_the_value_or_the_exception_on_the_caller():
    assert Beside(lambda: 41 + 1, "value").result() == 42

    def fails() -> None:
        raise KeyboardInterrupt  # a BaseException too: never lost in the thread

    with pytest.raises(KeyboardInterrupt):
        Beside(fails, "fails").result()


def _evaluation(monkeypatch, evaluate) -> runner._Evaluation:
    monkeypatch.setattr(runner, "_evaluate", evaluate)
    env = SimpleNamespace(label=object())
    return runner._Evaluation(None, env, {}, None, None, {}, {})


def test_evaluation_runs_beside_the_caller(monkeypatch):
    """It starts at creation, in a thread: the caller goes on (saves) while it runs. Run on
    the caller's thread, it would wait for an event only the caller sets afterwards."""
    saved = threading.Event()

    def evaluate(project, env, pins, family, ctx, manifests, part, request, read=None):
        part["evaluation"] = {"waited": saved.wait(timeout=10)}
        return "rows", "outputs"

    evaluation = _evaluation(monkeypatch, evaluate)
    saved.set()  # the caller's own work, while the evaluation waits for it
    result: dict = {"ok": True, "diagnostics": [{"code": "BE105"}]}
    timings: dict = {}
    assert evaluation.settle(result, timings) == ("rows", "outputs")
    assert result["evaluation"] == {"waited": True}
    assert "evaluate" in timings
    assert evaluation.settle(result, timings) == ("rows", "outputs")  # merged once
    assert result["diagnostics"] == [{"code": "BE105"}]


def test_evaluation_findings_keep_their_place_and_its_failure_stops_the_build(monkeypatch):
    def evaluate(project, env, pins, family, ctx, manifests, part, request, read=None):
        part["diagnostics"].append({"code": "BE411"})
        part["ok"] = False
        raise runner._Failed(part)

    evaluation = _evaluation(monkeypatch, evaluate)
    result: dict = {"ok": True, "diagnostics": [{"code": "BE105"}], "inputs": ["x"]}
    with pytest.raises(runner._Failed) as failed:
        evaluation.settle(result, {})
    assert failed.value.result is result
    assert result["ok"] is False
    assert [d["code"] for d in result["diagnostics"]] == ["BE105", "BE411"]


def test_a_refused_label_read_replaces_the_result(monkeypatch):
    refused = {"ok": False, "diagnostics": [{"code": "BE201"}]}

    def evaluate(project, env, pins, family, ctx, manifests, part, request, read=None):
        raise runner._Failed(refused)

    evaluation = _evaluation(monkeypatch, evaluate)
    with pytest.raises(runner._Failed) as failed:
        evaluation.settle({"ok": True, "diagnostics": []}, {})
    assert failed.value.result is refused


def test_a_dropped_evaluation_leaves_the_result_alone(monkeypatch):
    def evaluate(project, env, pins, family, ctx, manifests, part, request, read=None):
        part["evaluation"] = {"rows": 1}
        raise runner._Failed(part)

    evaluation = _evaluation(monkeypatch, evaluate)
    result: dict = {"ok": True, "diagnostics": []}
    assert runner._without(evaluation, result) == {"ok": True, "diagnostics": []}


def test_the_runner_leaves_without_teardown_but_flushed_and_with_exit_handlers(tmp_path):
    """`core.leave`, how the runner ends: exit handlers run and the streams are flushed before
    `os._exit` (buffered output and handlers are not lost); the interpreter's teardown is
    skipped (an object finalised at teardown never runs)."""
    import subprocess
    import sys

    script = (
        "import atexit, sys\n"
        "from buildenv.core.leave import leave\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        print('torn down', flush=True)\n"
        "kept = Late()\n"
        "atexit.register(lambda: print('handler', end=' '))\n"
        "print('buffered', end=' ')\n"
        "sys.stderr.write('err')\n"
        "leave(3)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "buffered handler "
    assert proc.stderr == "err"
