"""The PyTorch family's ONNX export: the exporter's function table is built once per process
and reused, with the same bytes as the exporter's own path, and the export falls back to that
path when the table's private layout is not the expected one. The export worker (another
process) gives the bytes of an export in the training's process, takes only torch's own
classes, is replaced by the export in-process whenever it cannot answer, and dies with the
training process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import buildenv  # noqa: E402
from buildenv.env.spec import Environment  # noqa: E402
from buildenv.training.families import adopt, torch_export_worker, torch_module  # noqa: E402
from buildenv.training.served_artifact import convert  # noqa: E402

pytestmark = pytest.mark.slow

INPUTS = ["a", "b", "c"]


def _env() -> Environment:
    columns = {name: {"dtype": "float64", "nullable": False} for name in INPUTS}
    return Environment.model_validate({
        "name": "e", "datasets": {"d": {"uri": "d.parquet",
                                         "columns": {**columns, "y": {"dtype": "bool"}}}},
        "label": {"dataset": "d", "column": "y", "classes": [False, True]},
        "serving": {"stack": "onnx", "opset": 18, "ops": ["ai.onnx:*"]}})


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(len(INPUTS), 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 2))


def _export(seed: int, net: torch.nn.Module | None = None) -> bytes:
    net = _net(seed) if net is None else net
    family = adopt(buildenv.TorchModel(net, inputs=INPUTS, output="logits"), _env())
    return convert(family, _env()).SerializeToString()


class _Scaled(torch.nn.Module):  # a class outside torch: the worker does not take it
    def __init__(self) -> None:
        super().__init__()
        self.inner = _net(5)

    def forward(self, x):
        return self.inner(x * 2.0)


@pytest.fixture
def worker():
    torch_export_worker.start(0, 1, 18)
    yield torch_export_worker._WORKER
    torch_export_worker.stop()


def test_the_reused_function_table_gives_the_exporters_own_bytes(monkeypatch):
    reused = [_export(1), _export(2)]  # the second export reuses the table the first built
    assert torch_module._REGISTRIES, "the table was not kept"
    monkeypatch.setattr(torch_module, "_registry_reused", contextlib.nullcontext)
    assert [_export(1), _export(2)] == reused
    assert reused[0] != reused[1]  # different weights: the table is not reusing a graph


def test_an_unexpected_table_layout_falls_back_to_the_exporters_path(monkeypatch):
    from torch.onnx._internal.exporter import _registration

    expected = _export(3)
    original = vars(_registration.ONNXRegistry)["from_torchlib"]
    calls = []

    def layout_changed(*args, **kwargs):  # not a classmethod: the reuse must stand aside
        calls.append(kwargs)
        return original.__func__(_registration.ONNXRegistry, *args, **kwargs)

    monkeypatch.setattr(torch_module, "_REGISTRIES", {})
    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib",
                        staticmethod(layout_changed))
    assert _export(3) == expected
    assert calls and torch_module._REGISTRIES == {}



def test_the_export_worker_gives_the_bytes_of_the_export_in_process(worker):
    assert worker is not None
    args = (INPUTS, True, "probabilities", 18, "m")
    pending = torch_export_worker.submit(_net(4), *args)
    assert pending is not None  # torch's own classes: the worker takes it
    by_worker = pending.result().SerializeToString()
    assert by_worker == torch_module.export_module(_net(4), *args).SerializeToString()
    assert _export(4) == by_worker  # the family's export goes through the worker
    assert worker.read == 2 and torch_export_worker.running()


def test_the_worker_takes_only_torchs_classes_and_a_dead_worker_falls_back(worker):
    expected = _export(6)
    assert torch_export_worker.submit(_Scaled(), INPUTS, True, "p", 18, "m") is None
    assert len(_export(0, _Scaled())) > 0 and worker.sent == 1  # exported in-process
    worker.proc.kill()
    worker.proc.wait()
    assert torch_export_worker.export(_net(6), INPUTS, True, "p", 18, "m") is None
    assert not torch_export_worker.running()
    assert _export(6) == expected  # in-process, the same bytes


def test_the_worker_dies_with_the_training_process():
    script = ("import sys, time, torch\n"
              "from buildenv.training.families import torch_export_worker as w\n"
              "w.start(0, 1, 18)\n"
              "print(w._WORKER.proc.pid, flush=True)\n"
              "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        maps = Path(f"/proc/{pid}/maps")
        started = time.monotonic()
        while "libtorch" not in maps.read_text():  # past its start: importing torch
            assert time.monotonic() - started < 120
            time.sleep(0.05)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 1.5  # its imports alone would take seconds more
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the export worker outlived the training process")
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
