"""The export worker's side (`torch_export_worker` starts it): requests on stdin, the ONNX
bytes of each export on the original stdout, whatever the libraries print on stderr.

The worker imports torch and the exporter, builds the exporter's table for the environment's
opset with one export of a one-weight module, then answers each request with
`torch_module.export_module`, the function the training process would call. It unpickles
torch's classes and plain containers only: a repository's class would run the training's code
again, outside the training process.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from typing import Any

import torch  # pants: no-infer-dep (the models extra)

from buildenv.training import torch_setup
from buildenv.training.families import torch_module
from buildenv.training.families.base import FamilyError
from buildenv.training.families.torch_export_worker import read, write

__all__ = ["serve"]

_ALLOWED = {"torch", "collections", "builtins", "copyreg", "_codecs", "numpy"}


class _TorchOnly(pickle.Unpickler):
    """Unpickles torch's classes and plain containers, nothing of the repository."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not torch's")
        return super().find_class(module, name)


def serve(replies_fd: int) -> None:
    """The worker's main loop (its first lines, in `torch_export_worker`, bound it to the
    training process and moved stdout to `replies_fd`)."""
    seed, threads, opset = (int(a) for a in sys.argv[3:6])
    requests = sys.stdin.buffer
    replies = os.fdopen(replies_fd, "wb")
    torch_setup.configure(torch, seed, threads)
    torch_module.warm_exporter(opset)
    while True:
        try:
            request = read(requests)
        except (EOFError, OSError):
            os._exit(0)
        write(replies, _answer(*request))


def _answer(kind: str, blob: bytes, *args: Any) -> tuple:
    try:
        module = _TorchOnly(io.BytesIO(blob)).load()
    except Exception as exc:
        return ("failed", f"cannot unpickle the module: {type(exc).__name__}")
    try:
        proto = torch_module.export_module(module, *args)
    except FamilyError as exc:
        p = exc.problem
        return ("family_error", p.code, p.message, list(p.hints))
    except Exception as exc:
        return ("failed", f"{type(exc).__name__}")
    return ("ok", proto.SerializeToString())
