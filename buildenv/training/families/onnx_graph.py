"""Ready ONNX models: an `onnx.ModelProto` returned by the training (tf2onnx, Keras, any
exporter, or built by hand).

Its graph inputs (those that are not initializers) are the model's input columns, by name, each
`[rows]` or `[rows, 1]`. Outputs: a regressor's first float output (or one named `variable`);
a classifier's `label` and/or `probabilities` output (or its 2-D float output), one probability
column per class of the environment's label, in the declared order. The graph must pass
onnx's checker and load in onnxruntime; it is predicted with onnxruntime, which is also what
serves it, and saved as it is.
"""

from __future__ import annotations

from typing import Any

import onnx
import onnxruntime

from buildenv.core.model_runtime import ModelLoadError, OnnxModel
from buildenv.env.spec import Environment
from buildenv.training.families.base import (
    Family,
    FamilyError,
    environment_classes,
    is_classification_label,
    library_versions,
)

__all__ = ["OnnxGraphFamily"]


class OnnxGraphFamily(Family):
    def __init__(self, proto: Any, env: Environment) -> None:
        initializers = {t.name for t in proto.graph.initializer}
        inputs = [i.name for i in proto.graph.input if i.name not in initializers]
        classes = environment_classes(env)
        classification = bool(is_classification_label(env))
        super().__init__(model=proto, inputs=inputs,
                         task="classification" if classification else "regression",
                         classes=classes if classification else None, kind="onnx",
                         model_class="onnx.ModelProto")
        if classification and not classes:
            raise FamilyError("BE415", "an ONNX classifier needs the environment's label "
                              "classes (the order of its probability columns)",
                              ("declare label.classes",))
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise FamilyError("BE415", f"the returned ONNX model is not valid: "
                              f"{_first_line(exc)}") from None
        self.payload = proto.SerializeToString(deterministic=True)
        try:
            session = onnxruntime.InferenceSession(self.payload,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FamilyError("BE415", f"onnxruntime cannot load the returned ONNX model: "
                              f"{_first_line(exc)}") from None
        self.encoded_labels = self._label_codes(session)
        try:
            self.runtime = OnnxModel({"inputs": inputs, "classes": self.classes,
                                      "task": self.task, "encoded_labels": self.encoded_labels},
                                     session)
        except ModelLoadError as exc:
            raise FamilyError("BE415", f"the returned ONNX model's outputs cannot be read: "
                              f"{exc}") from None

    def _label_codes(self, session: Any) -> bool:
        """A `label` output of integers that are not the classes themselves: positions."""
        label = next((o for o in session.get_outputs() if o.name == "label"), None)
        if label is None or not self.classes:
            return False
        integral = label.type.startswith("tensor(int")
        return integral and not all(isinstance(c, int) and not isinstance(c, bool)
                                    for c in self.classes)

    def predict(self, frame: Any) -> Any:
        return self.runtime.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        return self.runtime.predict_proba(frame)

    @property
    def has_proba(self) -> bool:
        return self.is_classifier and self.runtime.has_proba

    def libraries(self) -> dict[str, str]:
        return library_versions(["onnx", "onnxruntime"])

    def to_onnx(self, types: dict[str, str], opset: int) -> Any:
        return self.model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
