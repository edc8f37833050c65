"""`buildenv.TorchModel`, as the training process's families see it.

The class itself lives in the package's `__init__` (a training writes `buildenv.TorchModel`,
and importing buildenv must not import torch or any room of the package); it is re-exported
here beside the families that adopt it.
"""

from __future__ import annotations

from buildenv import OUTPUT_KINDS, ModelContractError, TorchModel

__all__ = ["OUTPUT_KINDS", "ModelContractError", "TorchModel"]
