"""PyTorch modules returned as `buildenv.TorchModel(module, inputs, output, classes)`.

The build feeds the module a float32 tensor of the input columns (NaN for nulls) in batches,
without gradients, in eval mode. Conversion wraps it so that the ONNX graph takes one `[rows,
1]` float input per column (concatenated in the declared order) and returns `probabilities`
(softmax of logits) or `variable`: the same interface as every other family's graph. The
exporter is torch's own (`torch.onnx.export`, the dynamo path); the metadata it records (source
paths, stack traces, Python class names) is removed, so the bytes do not depend on where the
repository or the virtual environment lives.

Imported only for a returned TorchModel, so torch is already loaded. Under Pants, torch is in a
training's runtime only when the training imports it (BUILD's overrides add onnxscript).
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch  # pants: no-infer-dep (the models extra: see the module docstring)

from buildenv.env.spec import Environment
from buildenv.training.families import torch_export_worker
from buildenv.training.families.base import (
    Family,
    FamilyError,
    environment_classes,
    is_classification_label,
    library_versions,
    repository_modules,
)
from buildenv.training.families.torch_contract import TorchModel
from buildenv.training.introspect import public_path

__all__ = ["BATCH_ROWS", "TorchFamily", "export_module", "warm_exporter"]

BATCH_ROWS = 65_536  # rows per forward pass when predicting (bounds memory)


class TorchFamily(Family):
    def __init__(self, contract: TorchModel, env: Environment) -> None:
        classification = contract.output != "value"
        super().__init__(model=contract, inputs=list(contract.inputs),
                         task="classification" if classification else "regression",
                         kind="torch",
                         model_class=f"buildenv.TorchModel({public_path(contract.module)})")
        self.module = contract.module
        declared = environment_classes(env)
        label_kind = is_classification_label(env)
        if classification:
            self.classes = contract.classes or declared
            if not self.classes:
                raise FamilyError("BE415", f"TorchModel output '{contract.output}' needs "
                                  "classes: pass classes=[...] or declare label.classes",
                                  ("the probability columns follow that order",))
            if declared and not set(map(repr, self.classes)) <= set(map(repr, declared)):
                extra = [c for c in self.classes if repr(c) not in set(map(repr, declared))]
                raise FamilyError("BE415", f"TorchModel classes {extra!r} are not classes of "
                                  f"the environment's label ({declared!r})")
        elif label_kind:
            raise FamilyError("BE415", "TorchModel output 'value' (regression), but the "
                              "environment's label is a class",
                              ("return output='logits' or 'probabilities' with classes",))
        self._probe()

    def _probe(self) -> None:
        """One forward pass on two rows of zeros: the declared inputs fit the module, and the
        output has the declared shape."""
        width = len(self.inputs or [])
        try:
            with torch.no_grad():
                out = self.module.eval()(torch.zeros(2, width, dtype=torch.float32))
        except Exception as exc:
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise FamilyError(
                "BE415", f"the module's forward fails on the declared inputs (a float32 tensor "
                f"[rows, {width}]): {type(exc).__name__}: {text}",
                ("inputs=[...] lists the columns the module reads, in order",)) from None
        width = len(self.classes or [])
        expected = (2, width) if self.is_classifier else None
        shape = tuple(getattr(out, "shape", ()))
        if not hasattr(out, "shape") or (expected and shape != expected) or (
                not expected and shape not in ((2,), (2, 1))):
            want = f"[rows, {width}]" if expected else "[rows] or [rows, 1]"
            raise FamilyError(
                "BE415", f"output '{self.model.output}' must be {want} per batch, but the "
                f"module returns {type(out).__name__} of shape "
                f"[{', '.join(map(str, shape))}] for 2 rows",
                ("check output= and classes= against what forward returns",))

    def _forward(self, frame: Any) -> Any:
        x = frame[self.inputs].to_numpy(dtype=np.float32, na_value=np.nan)
        outs = []
        module = self.module.eval()
        with torch.no_grad():
            for start in range(0, len(x), BATCH_ROWS):
                y = module(torch.from_numpy(np.ascontiguousarray(x[start:start + BATCH_ROWS])))
                if self.model.output == "logits":
                    y = torch.softmax(y, dim=1)
                outs.append(y.double().numpy())
        if not outs:
            return np.zeros((0, len(self.classes or [None])))
        return np.concatenate(outs)

    def predict_proba(self, frame: Any) -> Any:
        return self._forward(frame)

    def predict(self, frame: Any) -> Any:
        out = self._forward(frame)
        if self.is_classifier:
            return np.asarray(self.classes, dtype=object)[out.argmax(axis=1)]
        return out.reshape(-1)

    def ops(self) -> list[dict]:
        return [{"class": public_path(m), "where": name or type(m).__name__}
                for name, m in self.module.named_modules()]

    def libraries(self) -> dict[str, str]:
        modules = {"torch"} | {type(m).__module__.split(".")[0]
                               for m in self.module.modules()}
        return library_versions(sorted(modules))

    def code_modules(self, root: Path) -> list[str]:
        return repository_modules([type(m) for m in self.module.modules()], root)

    def to_onnx(self, types: dict[str, str], opset: int) -> Any:
        """Exported by the export worker when one runs (`torch_export_worker`: the same
        function, the same bytes), else here."""
        args = self.export_args(opset)
        proto = torch_export_worker.export(*args)
        return proto if proto is not None else export_module(*args)

    def export_args(self, opset: int) -> tuple:
        """`export_module`'s arguments for this model."""
        return (self.module, list(self.inputs or []), self.model.output == "logits",
                "probabilities" if self.is_classifier else "variable", opset,
                self.model_class)

    def save_native(self, directory: Path) -> list[str]:
        """The module's weights (`torch.save` of the state dict: load it with
        `weights_only=True`, which runs no code)."""
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), directory / "state_dict.pt")
        return ["state_dict.pt"]


def export_module(module: Any, inputs: list[str], softmax: bool, output: str, opset: int,
                  model_class: str) -> Any:
    """The ONNX graph of `module` behind one `[rows, 1]` input per column (FamilyError BE405
    when torch cannot export it), without the exporter's metadata."""
    wrapper = _ColumnsToModule(module, softmax).eval()
    batch = torch.export.Dim("batch")
    example = tuple(torch.zeros(2, 1) for _ in inputs)
    try:
        with _registry_reused():
            program = torch.onnx.export(
                wrapper, example, input_names=list(inputs), output_names=[output],
                dynamic_shapes=(tuple({0: batch} for _ in example),),  # forward(*columns)
                opset_version=opset,
                dynamo=True, verbose=False, optimize=True)
        assert program is not None  # dynamo=True returns the program
        proto = program.model_proto
    except Exception as exc:
        raise FamilyError("BE405", f"cannot export {model_class} to ONNX opset "
                          f"{opset}: {_export_error(exc)}",
                          ("keep forward() to tensor operations torch.export can trace "
                           "(no data-dependent Python control flow)",)) from None
    _strip_metadata(proto)
    return proto


def warm_exporter(opset: int) -> None:
    """Import the exporter and build its function table for `opset` (the export worker does
    this while the training reads and fits): one export of a one-weight module."""
    try:
        export_module(torch.nn.Linear(1, 1), ["x"], False, "variable", opset, "warm-up")
    except FamilyError:
        pass


class _ColumnsToModule(torch.nn.Module):
    """One `[rows, 1]` input per column -> the module's single tensor -> its output."""

    def __init__(self, module: Any, softmax: bool) -> None:
        super().__init__()
        self.module = module
        self.softmax = softmax

    def forward(self, *columns: Any) -> Any:
        out = self.module(torch.cat(columns, dim=1))
        return torch.softmax(out, dim=1) if self.softmax else out


_REGISTRIES: dict[Any, Any] = {}  # (registry class, arguments) -> the registry built once
_REGISTRY_LOCK = threading.Lock()


@contextmanager
def _registry_reused() -> Iterator[None]:
    """Every `torch.onnx.export` rebuilds the exporter's table of ONNX functions
    (`ONNXRegistry.from_torchlib`: it re-reads and parses the source of about 500 onnxscript
    functions, some 40% of exporting a small module once the exporter is imported), and the
    build exports twice: the pre-check's sample model and the full one. The table depends only
    on the opset and the installed torch and onnxscript, and the export only reads it; so it is
    built once per process and each export gets its own copy of its function lists. Falls back
    to the exporter's own path when its private layout is not the one this was written for."""
    try:
        # Deferred: the exporter's own import takes seconds, paid by the first export only.
        from torch.onnx._internal.exporter import _registration  # pants: no-infer-dep
    except ImportError:
        yield
        return
    registry_class = getattr(_registration, "ONNXRegistry", None)
    original = vars(registry_class).get("from_torchlib") if registry_class else None
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__func__

    def from_torchlib(cls: Any, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        built = _REGISTRIES.get(key)
        if built is None:
            built = build(cls, *args, **kwargs)
            if not isinstance(getattr(built, "functions", None), dict):
                return built  # not the layout copied below: never reused
            _REGISTRIES[key] = built
        return _registry_copy(built)

    with _REGISTRY_LOCK:
        registry_class.from_torchlib = classmethod(from_torchlib)  # type: ignore[union-attr]
        try:
            yield
        finally:
            registry_class.from_torchlib = original  # type: ignore[union-attr]


def _registry_copy(registry: Any) -> Any:
    """A registry the export may extend without changing the one kept."""
    copied = copy.copy(registry)
    copied.functions = {target: list(metas) for target, metas in registry.functions.items()}
    return copied


def _export_error(exc: Exception) -> str:
    """The exporter's reason, without its advice and terminal colours: the line of its
    `Exception summary` naming the underlying error, else the first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    for line in text.splitlines():
        if line.startswith("<class '"):
            return line[:300]
    return (text.splitlines()[0][:300] if text else "") or type(exc).__name__


def _strip_metadata(proto: Any) -> None:
    """Remove exporter metadata (source paths, stack traces, class names) everywhere."""
    def graph(g: Any) -> None:
        del g.metadata_props[:]
        for value in list(g.input) + list(g.output) + list(g.value_info):
            del value.metadata_props[:]
        for tensor in g.initializer:
            del tensor.metadata_props[:]
        for node in g.node:
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graph(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        graph(sub)

    del proto.metadata_props[:]
    graph(proto.graph)
    for function in proto.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
