"""The cyclic garbage collector paused while `buildenv lock` imports what it needs.

Importing pydantic, making the environment models' classes and the lock's modules allocates
tens of thousands of objects that live as long as the process; the collector, counting those
allocations, runs about seventy times during the imports, scanning them again and again to
free a few hundred objects (cycles left by making classes): about a tenth of the CPU of a lock
after an environment edit (bench/README.md, "Session 10 (h83)"). `pause` stops it when the
command starts; `resume`, once the imports are done, moves what they made out of its sight
(`gc.freeze`: never scanned again) and starts it again, so the full lock's work is collected as
any program's (the few hundred objects the imports left in cycles stay: tens of kilobytes,
once). A lock the plan answers (`quick_lock`) runs to its end paused: stats, hashes and the
writes of locks and the plan, which make no cycles worth a pass. Reference counting frees
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
