"""The cyclic garbage collector paused while `buildenv lock` imports what it needs.

Importing pydantic, making the environment models' classes and the lock's modules allocates
tens of thousands of objects that live as long as the process; the collector, counting those
allocations, runs about seventy times during the imports and finds nothing to free, about a
twentieth of the CPU of a lock after an environment edit (bench/README.md, "Session 10
(h83)"). `pause` stops it when the command starts; `resume`, once the imports are done, moves
what they made out of its sight (`gc.freeze`: never scanned again) and starts it again, so the
lock's own work is collected as any program's. Nothing is collected differently: the objects
made during the imports are the modules' and classes' own, and reference counting still frees
everything that is not in a cycle while the collector waits.
"""

from __future__ import annotations

import gc

__all__ = ["pause", "paused", "resume"]

_paused = False


def pause() -> None:
    """Stop the cyclic collector until `resume` (nothing if it was already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def paused() -> bool:
    """Whether `pause` stopped the collector and `resume` has not started it again."""
    return _paused


def resume(freeze: bool = True) -> None:
    """Start the collector `pause` stopped, the objects made meanwhile frozen (never scanned:
    they are the imported modules' own) unless `freeze` is false; nothing if `pause` did not
    stop it."""
    global _paused
    if _paused:
        _paused = False
        if freeze:
            gc.freeze()
        gc.enable()
