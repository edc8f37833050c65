"""buildenv: compile ML training code against declarative, locked build environments."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["TorchModel", "__version__"]


def __getattr__(name: str) -> Any:
    # `buildenv.TorchModel` on first use: `import buildenv` imports no model library.
    if name == "TorchModel":
        from buildenv.training.families.torch_contract import TorchModel

        return TorchModel
    raise AttributeError(f"module 'buildenv' has no attribute {name!r}")
