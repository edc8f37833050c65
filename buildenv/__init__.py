"""buildenv: compile ML training code against declarative, locked build environments.

The package holds its version, the contract classes a training returns (`TorchModel`) and the
decorator of labeling functions: plain Python, importing nothing of buildenv or of any model
library, so `import buildenv` in a training costs nothing and no room of the package is
imported from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__version__ = "0.1.0"
__all__ = ["OUTPUT_KINDS", "ModelContractError", "TorchModel", "__version__",
           "labeling_function"]

OUTPUT_KINDS = ("logits", "probabilities", "value")


class ModelContractError(ValueError):
    """A returned model's declared contract is unusable (reported as BE415 at the line that
    built it)."""


class TorchModel:
    """A PyTorch module with its serving contract.

    `module` takes one float32 tensor of shape `[rows, len(inputs)]`: the `inputs` columns in
    that order (categorical columns are the training's business: encode them inside the
    module, or read numeric columns). `output` says what it returns per row: `logits` or
    `probabilities` over `classes` (one column per class, in that order), or one `value`
    (regression). `classes` defaults to the environment's label classes.
    """

    def __init__(self, module: Any, inputs: Sequence[str], output: str = "logits",
                 classes: Sequence[Any] | None = None) -> None:
        if output not in OUTPUT_KINDS:
            raise ModelContractError(f"TorchModel output must be one of "
                                     f"{', '.join(OUTPUT_KINDS)}, not {output!r}")
        if isinstance(inputs, str) or not isinstance(inputs, Sequence) or not inputs \
                or not all(isinstance(c, str) for c in inputs):
            raise ModelContractError("TorchModel inputs must be a non-empty list of column "
                                     "names")
        if len(set(inputs)) != len(inputs):
            raise ModelContractError("TorchModel inputs name a column twice")
        if classes is not None and (isinstance(classes, str) or not list(classes)):
            raise ModelContractError("TorchModel classes must be a non-empty list")
        if output == "value" and classes is not None:
            raise ModelContractError("TorchModel output 'value' (regression) takes no classes")
        if not _is_module(module):
            raise ModelContractError(f"TorchModel wraps a torch.nn.Module, not "
                                     f"{type(module).__name__}")
        self.module = module
        self.inputs = list(inputs)
        self.output = output
        self.classes = list(classes) if classes is not None else None

    def __repr__(self) -> str:
        return (f"TorchModel({type(self.module).__name__}, inputs={self.inputs!r}, "
                f"output={self.output!r})")


def _is_module(obj: Any) -> bool:
    """Whether `obj` is a torch.nn.Module, decided without importing torch."""
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"
               for c in type(obj).__mro__)


F = TypeVar("F", bound=Callable[..., Any])

#: The attribute a labeling function carries: what `buildenv.labels.functions` looks for.
LABELING_FUNCTION = "__buildenv_labeling_function__"


def labeling_function(*, columns: list[str]) -> Callable[[F], F]:
    """Declare a labeling function of a label set computed by functions (docs/labels.md).

    The function takes a batch -- a pandas DataFrame of exactly `columns` of the label set's
    dataset -- and returns one class of the taxonomy, or None (abstain), per row: a Series,
    array or list as long as the batch. buildenv checks the columns without running the code,
    reads them through the data gate, and reruns a function only when its code changes."""
    if not isinstance(columns, (list, tuple)) or not columns or \
            not all(isinstance(c, str) for c in columns):
        raise TypeError("labeling_function(columns=[...]) takes a non-empty list of column names")
    declared = list(columns)

    def mark(function: F) -> F:
        setattr(function, LABELING_FUNCTION, {"columns": declared})
        return function

    return mark
