"""Determinism for trainings that use PyTorch, without importing torch for those that do not.

When the training imports torch (at its top or inside `train`), torch is configured before
the training can use it: `torch.manual_seed(seed)` (CPU generators), deterministic algorithms
(`torch.use_deterministic_algorithms(True)`: an operation without a deterministic
implementation raises instead of varying), and the build's thread count for intra-op work
(one inter-op thread). Rebuilding the same pair on the same machine then gives the same
weights. `reseed` restores the seed between the pre-check and the full run. `install(..., then=f)`
calls `f()` once torch is configured (the runner starts the ONNX export worker there).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

__all__ = ["configure", "install", "reseed"]

_SETTINGS: dict[str, int] = {}
_THEN: list[Any] = []


def configure(torch: Any, seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started
        pass


def reseed() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and _SETTINGS:
        torch.manual_seed(_SETTINGS["seed"])


class _TorchFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `torch` is imported, wraps its loader so that torch is
    configured as soon as its module has executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            configure(module, _SETTINGS["seed"], _SETTINGS["threads"])
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchFinder)]
            _call_then()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(seed: int, threads: int, then: Any = None) -> None:
    """Configure torch now if it is imported, else when it is; then call `then()`."""
    _SETTINGS.update(seed=seed, threads=threads)
    _THEN[:] = [then] if then is not None else []
    if "torch" in sys.modules:
        configure(sys.modules["torch"], seed, threads)
        _call_then()
    elif not any(isinstance(f, _TorchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchFinder())


def _call_then() -> None:
    while _THEN:
        _THEN.pop()()
