"""PyTorch's ONNX export in a process of its own, so that importing the exporter costs the
training nothing.

Importing `torch.onnx`'s exporter (torch._dynamo, torch.export, sympy, onnxscript) and building
its table of ONNX functions takes seconds of one core, and the build exports twice (the
pre-check's sample model, then the full one). In the training process these seconds are on the
critical path: the export traces with process-wide state, so it cannot run in a thread beside
the fit, and a thread beside a PyTorch fit slows it anyway (the interpreter's lock changes
hands at every tensor operation). So when a training on the `onnx` stack imports torch, the
runner starts this worker (`start`): a fresh interpreter that imports the exporter on the core a
threads=1 fit leaves free, while the training reads its data and fits. Each export sends it
the module (pickled: weights and structure) and gets the ONNX bytes back, made by the very
function the training process would call (`torch_module.export_module`, in
`torch_export_serve`), so the bytes are the same; the sample's export then runs beside the full
fit too.

Only modules built from torch's own classes are sent (a class of the repository would have to
be imported in the worker: the training's code run again, outside the training's process); the
worker unpickles nothing else. Whenever the worker cannot answer (not started, refused, crashed),
`export` returns None and the caller exports in its own process as before. The worker never
outlives the training: `stop` kills it, it exits when its request pipe closes, and the kernel
kills it when the training process dies (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from typing import IO, Any

from buildenv.training.confinement import Guard
from buildenv.training.families.base import FamilyError

__all__ = ["Pending", "Unavailable", "export", "read", "running", "start", "stop", "submit",
           "write"]

_LOCK = threading.Lock()
_WORKER: _Worker | None = None
_PR_SET_PDEATHSIG = 1


class Unavailable(Exception):
    """The worker could not answer: export in this process instead."""


class _Worker:
    def __init__(self, seed: int, threads: int, opset: int) -> None:
        # Bound to this process's life before anything else (importing buildenv's families
        # imports torch: seconds): the kernel kills it when this process dies, and it exits
        # at once if this process died before that.
        boot = ("import ctypes, os, sys\n"
                "try:\n"
                f"    ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)})\n"
                "except (OSError, AttributeError):\n"
                "    pass\n"
                "if os.getppid() != int(sys.argv[2]):\n"
                "    os._exit(0)\n"
                "os.nice(10)\n"  # the fit (and the Judge thread) first when cores are scarce
                "replies = os.dup(1)\n"  # what the libraries print goes to stderr
                "os.dup2(2, 1)\n"
                "sys.path[:] = __import__('json').loads(sys.stdin.buffer.readline())\n"
                "from buildenv.training.families.torch_export_serve import serve\n"
                "serve(replies)\n")
        guard = Guard.active
        noted = len(guard.attempts) if guard is not None else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, "buildenv-export-worker", str(os.getpid()),
             str(seed), str(threads), str(opset)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        if guard is not None:  # buildenv's own process, not an attempt of the training's
            del guard.attempts[noted:]
        self.sent = 0
        self.read = 0
        self.replies: dict[int, tuple] = {}
        self.broken = False
        self.lock = threading.Lock()  # one reader of the replies at a time
        # Requests are written by a thread of their own: while the worker still imports, a
        # module larger than the pipe's buffer would block the training on its write.
        self.outbox: queue.SimpleQueue[tuple | bytes | None] = queue.SimpleQueue()
        # The import path goes first, on stdin: on the command line, the sandbox's audit hook
        # would read a path under the project's hidden state as an attempt to reach it.
        self.outbox.put(json.dumps(sys.path).encode() + b"\n")
        threading.Thread(target=self._send_all, name="buildenv-export-requests",
                         daemon=True).start()

    def send(self, request: tuple) -> int:
        self.outbox.put(request)
        self.sent += 1
        return self.sent

    def _send_all(self) -> None:
        assert self.proc.stdin is not None
        while (request := self.outbox.get()) is not None:
            try:
                if isinstance(request, bytes):
                    self.proc.stdin.write(request)
                    self.proc.stdin.flush()
                else:
                    write(self.proc.stdin, request)
            except (OSError, ValueError):  # the worker died, or was stopped
                self.broken = True
                break
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def reply(self, number: int) -> tuple:
        assert self.proc.stdout is not None
        while number not in self.replies:
            if self.broken:
                raise Unavailable("the export worker stopped")
            try:
                message = read(self.proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError, struct.error):
                self.broken = True
                continue
            self.read += 1
            self.replies[self.read] = message
        return self.replies.pop(number)

    def kill(self) -> None:
        """Kill it; a thread waiting for a reply then reads the end of the pipe."""
        self.broken = True
        self.proc.kill()
        self.proc.wait()
        self.outbox.put(None)


class Pending:
    """One export sent to the worker; `result()` waits for its ONNX graph."""

    def __init__(self, worker: _Worker, number: int) -> None:
        self._worker = worker
        self._number = number

    def result(self) -> Any:
        """The graph (`onnx.ModelProto`); FamilyError as the export raised it; Unavailable when
        the worker could not answer."""
        with self._worker.lock:
            kind, *rest = self._worker.reply(self._number)
        if kind == "ok":
            import onnx  # deferred: imported only when a graph comes back (torch's family)

            return onnx.load_from_string(rest[0])
        if kind == "family_error":
            code, message, hints = rest
            raise FamilyError(code, message, tuple(hints))
        raise Unavailable(rest[0] if rest else kind)


def start(seed: int, threads: int, opset: int) -> None:
    """Start the worker (once per process), its exporter warmed for `opset`; nothing when it
    cannot start."""
    global _WORKER
    with _LOCK:
        if _WORKER is not None:
            return
        try:
            _WORKER = _Worker(seed, threads, opset)
        except OSError:  # no interpreter to run, or the sandbox refuses: export in-process
            _WORKER = None


def running() -> bool:
    return _WORKER is not None and not _WORKER.broken


def stop() -> None:
    """Kill the worker (idempotent; never waits for a reply another thread awaits)."""
    global _WORKER
    worker, _WORKER = _WORKER, None
    if worker is not None:
        worker.kill()


def submit(module: Any, *args: Any) -> Pending | None:
    """Send one export (`torch_module.export_module`'s arguments) to the worker; None when
    there is none or the module is not one it takes (a class outside torch, or it does not
    pickle)."""
    worker = _WORKER
    if worker is None or worker.broken or not _transferable(module):
        return None
    try:
        blob = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    with _LOCK:
        number = worker.send(("export", blob, *args))
    return Pending(worker, number)


def export(module: Any, *args: Any) -> Any:
    """The graph exported by the worker, or None when it cannot (export in-process then)."""
    pending = submit(module, *args)
    if pending is None:
        return None
    try:
        return pending.result()
    except Unavailable:
        return None


def _transferable(module: Any) -> bool:
    return all(type(m).__module__.split(".")[0] == "torch" for m in module.modules())


def write(stream: IO[bytes], message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">Q", len(data)) + data)
    stream.flush()


def read(stream: IO[bytes]) -> tuple:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack(">Q", head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return tuple(pickle.loads(data))
