"""The PyTorch family's ONNX export: the exporter's function table is built once per process
and reused, with the same bytes as the exporter's own path, and the export falls back to that
path when the table's private layout is not the expected one."""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import buildenv  # noqa: E402
from buildenv.env.spec import Environment  # noqa: E402
from buildenv.training.families import adopt, torch_module  # noqa: E402
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


def _export(seed: int) -> bytes:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(len(INPUTS), 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2))
    family = adopt(buildenv.TorchModel(net, inputs=INPUTS, output="logits"), _env())
    return convert(family, _env()).SerializeToString()


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

