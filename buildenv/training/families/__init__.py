"""Model families: what a training may return, adopted behind one interface (`base.Family`).

| returned object | family | module |
| --- | --- | --- |
| a scikit-learn-API estimator or pipeline (XGBoost's, LightGBM's wrappers included) | `sklearn` | `sklearn_api` |
| `buildenv.TorchModel(module, inputs, output, classes)` | `torch` | `torch_module` |
| an `onnx.ModelProto` | `onnx` | `onnx_graph` |

Each family module imports its own library, and only when a model of that family is adopted.
"""

from __future__ import annotations

from typing import Any

from buildenv.env.spec import Environment
from buildenv.training.families.base import Family, FamilyError, Problem
from buildenv.training.families.torch_contract import TorchModel

# Deferred imports (buildenv): each family's module imports its own library (torch, onnx,
# scikit-learn and the converters), so only the family of the returned model is imported.

__all__ = ["Family", "FamilyError", "Problem", "adopt"]


def adopt(model: Any, env: Environment) -> Family:
    """The family of what `train(ctx)` returned; FamilyError when it is none of them or its
    contract does not hold."""
    if isinstance(model, TorchModel):
        from buildenv.training.families.torch_module import TorchFamily

        return TorchFamily(model, env)
    if type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx"):
        from buildenv.training.families.onnx_graph import OnnxGraphFamily

        return OnnxGraphFamily(model, env)
    if any(c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module"
           for c in type(model).__mro__):
        raise FamilyError("BE304", f"train() returned a bare PyTorch module "
                          f"({type(model).__name__}): buildenv cannot tell which columns it "
                          "reads or what its output means",
                          ("return buildenv.TorchModel(module, inputs=[column, ...], "
                           "output='logits'|'probabilities'|'value', classes=[...])",))
    if model is None or not hasattr(model, "predict"):
        raise FamilyError("BE304", f"train() returned {type(model).__name__}, not a model "
                          "buildenv can serve",
                          ("return a fitted scikit-learn-API estimator or pipeline (XGBoost "
                           "and LightGBM wrappers included), a buildenv.TorchModel, or an "
                           "onnx.ModelProto whose inputs are column names",))
    from buildenv.training.families.sklearn_api import SklearnFamily

    return SklearnFamily(model, env)
