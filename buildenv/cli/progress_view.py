"""How progress is shown on the command line: `Live` (rich, for terminals) and `Lines` (plain
status lines and heartbeats, for CI logs and pipes), both on stderr, chosen by `renderer()`.

Library code only announces work (`core.progress`); these renderers look at its tasks on their
own clock, a few times a second, so a hook in a hot loop costs nothing measurable. Work shorter
than `after` seconds (default 1) is never shown.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from buildenv.core.progress import Reporter, Task, seconds_text

# Deferred imports (rich): the live view imports rich in its drawing thread, once it is shown: short
# commands never pay for it.

__all__ = ["MODES", "Lines", "Live", "Renderer", "chosen_mode", "renderer"]

MODES = ("auto", "live", "plain", "off")
AFTER = 1.0  # seconds of work before anything about it is shown
HEARTBEAT = 30.0  # seconds between status lines of one long-running item (plain lines)
TICK = 0.25  # renderers look at tasks four times a second


# --- text helpers ------------------------------------------------------------------------------



def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.1f} {unit}" if abs(n) < 10 else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _count_text(n: float, unit: str) -> str:
    return _bytes_text(n) if unit == "bytes" else f"{int(n):,}"


def amount_text(item: Task) -> str:
    """`512 MiB of 1.0 GiB`, `1,200 of 5,000 rows`, `3 layers`, `1 pair` (no `of` once all is
    done)."""
    done = _count_text(item.completed, item.unit)
    if item.total is not None and item.completed != item.total:
        done += f" of {_count_text(item.total, item.unit)}"
    if item.unit in ("bytes", ""):
        return done
    one = item.completed == 1 and (item.total is None or item.total == 1)
    return f"{done} {item.unit[:-1] if one and item.unit.endswith('s') else item.unit}"


def rate_text(item: Task, elapsed: float) -> str:
    """`170 MiB/s`, `2,400,000 rows/s`; nothing for units counted in ones (pairs, layers)."""
    if elapsed <= 0 or not item.completed or item.unit not in ("bytes", "rows"):
        return ""
    rate = item.completed / elapsed
    if item.unit == "bytes":
        return f"{_bytes_text(rate)}/s"
    return f"{rate:,.0f} rows/s"


def title(item: Task, phase_name: str | None = None) -> str:
    """`train recommender @ prod-2026-09`: the phase, then what it works on."""
    return f"{phase_name} {item.label}" if phase_name else item.label


# --- renderers ---------------------------------------------------------------------------------

class Renderer(Reporter):
    """Keeps the tasks it was told about and looks at them every `TICK` seconds in a daemon
    thread (started with the first task). `tick(now)` is public: with `ticking=False` there is
    no thread and tests drive the clock."""

    def __init__(self, stream: IO[str], after: float = AFTER, ticking: bool = True) -> None:
        self.stream = stream
        self.after = after
        self.ticking = ticking
        self._lock = threading.RLock()
        self._tasks: list[Task] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def started(self, task: Task) -> None:
        with self._lock:
            if self._closed:
                return
            self._tasks.append(task)
            self._on_start(task, time.monotonic())
            if self._thread is None and self.ticking:
                thread = threading.Thread(target=self._run, name="buildenv-progress",
                                          daemon=True)
                thread.start()  # before `close` (another thread) can see it: it joins it
                self._thread = thread

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick(time.monotonic())
            except Exception:  # progress never breaks the work it reports on
                pass

    def close(self) -> None:
        self._stop.set()  # a ticker `started` starts after this ends at once
        thread = self._thread  # started, or None (a task of another thread may start one)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._on_close()

    def _on_start(self, task: Task, now: float) -> None:
        pass

    def _on_close(self) -> None:
        pass

    def tick(self, now: float) -> None:
        raise NotImplementedError


class _LineState:
    __slots__ = ("shown", "phase_shown", "last")

    def __init__(self) -> None:
        self.shown = False  # its start line was printed
        self.phase_shown = False  # the current phase's start line was printed
        self.last = 0.0  # when its last line was printed


class Lines(Renderer):
    """Status lines without control characters: a task (and each of its phases) gets a start
    line once it has run `after` seconds, an end line with its duration, and a heartbeat line
    every `heartbeat` seconds while it runs: `train recommender @ prod-2026-09: 45 s`."""

    def __init__(self, stream: IO[str], after: float = AFTER, heartbeat: float = HEARTBEAT,
                 ticking: bool = True) -> None:
        super().__init__(stream, after, ticking)
        self.heartbeat = heartbeat

    def _write(self, item: Task, text: str, now: float) -> None:
        item.view.last = now
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: nothing to report to
            pass

    def _on_start(self, task: Task, now: float) -> None:
        task.view = _LineState()
        if self.after <= 0:
            self._reveal(task, now)

    def _reveal(self, item: Task, now: float) -> None:
        item.view.shown = True
        self._write(item, f"{item.label}: started", now)

    def _reveal_phase(self, item: Task, now: float) -> None:
        item.view.phase_shown = True
        self._write(item, f"{title(item, item.phase_name)}: started", now)

    def tick(self, now: float) -> None:
        with self._lock:
            if self._closed:
                return
            for item in list(self._tasks):
                state = item.view
                if item.ended is not None:
                    continue
                if not state.shown:
                    if now - item.started < self.after:
                        continue
                    self._reveal(item, now)
                if item.phase_name and not state.phase_shown and \
                        now - item.phase_started >= self.after:
                    self._reveal_phase(item, now)
                if now - state.last >= self.heartbeat:
                    if state.phase_shown:
                        text = f"{title(item, item.phase_name)}: " \
                               f"{int(now - item.phase_started)} s"
                    else:
                        text = f"{item.label}: {int(now - item.started)} s"
                    if item.unit or item.completed:
                        text += f" ({amount_text(item)})"
                    self._write(item, text, now)

    def phase_changed(self, task: Task, old: str | None, spent: float | None) -> None:
        with self._lock:
            if self._closed or task.view is None:
                return
            now = time.monotonic()
            if task.view.phase_shown and old is not None and spent is not None:
                self._write(task, f"{title(task, old)}: done in {seconds_text(spent)}", now)
            task.view.phase_shown = False
            if self.after <= 0 and task.view.shown and task.phase_name:
                self._reveal_phase(task, now)

    def finished(self, task: Task) -> None:
        with self._lock:
            if self._closed or task.view is None:
                return
            if task in self._tasks:
                self._tasks.remove(task)
            if not task.view.shown:
                return
            seconds = task.elapsed
            text = f"{task.label}: {task.status} in {seconds_text(seconds)}"
            if task.timings:
                text += " (" + ", ".join(f"{name} {seconds_text(spent)}"
                                         for name, spent in task.timings.items()) + ")"
            elif task.unit or task.completed:
                rate = rate_text(task, seconds)
                text += f" ({amount_text(task)}{', ' + rate if rate else ''})"
            self._write(task, text, time.monotonic())


_DONE_STYLE = {"failed": "red", "stopped": "red"}
_BAR = 20  # characters


class Live(Renderer):
    """A live view (rich) redrawn in place a few times a second: a bar with rate and ETA for
    tasks that count something, the phase and elapsed time for the others. It appears once some
    work has run `after` seconds, and is erased when the command ends (transient). rich is
    imported then, in the drawing thread: short commands never pay for it."""

    def __init__(self, stream: IO[str], after: float = AFTER, *, no_color: bool = False,
                 force_terminal: bool = False, ticking: bool = True) -> None:
        super().__init__(stream, after, ticking)
        self.no_color, self.force_terminal = no_color, force_terminal
        self._console: Any = None
        self._live: Any = None

    @property
    def console(self) -> Any:
        with self._lock:
            if self._console is None:
                from rich.console import Console

                self._console = Console(file=self.stream, no_color=self.no_color or None,
                                        force_terminal=True if self.force_terminal else None,
                                        highlight=False, soft_wrap=False)
            return self._console

    def finished(self, task: Task) -> None:
        with self._lock:
            if not task.keep and task in self._tasks:
                self._tasks.remove(task)

    def _visible(self, now: float) -> list[Task]:
        shown = [t for t in self._tasks if (t.ended is None and now - t.started >= self.after)
                 or (t.ended is not None and t.keep)]
        # children under their parents, each level in start order
        kids: dict[int, list[Task]] = {}
        for item in shown:
            kids.setdefault(id(item.parent) if item.parent in shown else 0, []).append(item)
        ordered: list[Task] = []

        def walk(key: int) -> None:
            for item in kids.get(key, []):
                ordered.append(item)
                walk(id(item))

        walk(0)
        return ordered

    def tick(self, now: float) -> None:
        with self._lock:
            if self._closed:
                return
            rows = self._visible(now)
            if self._live is None:
                if not any(t.ended is None for t in rows):
                    return
                from rich.live import Live as RichLive

                # Python-level writes to stderr while the view is up (a library's warning)
                # are printed above it; stdout is left alone: it may be machine output.
                self._live = RichLive(console=self.console, auto_refresh=False, transient=True,
                                      redirect_stdout=False, redirect_stderr=True)
                self._live.start()
            self._live.update(self.render(rows, now), refresh=True)

    def render(self, rows: list[Task], now: float) -> Any:
        """One line per task: label, phase or final status, elapsed, bar, amount/rate/ETA.
        Plain padded text rather than a rich Table: a frame costs a fraction of the time."""
        from rich.text import Text

        width = max((2 * t.depth + len(t.label) for t in rows), default=0)
        states = [t.status if t.ended is not None else t.phase_name or "" for t in rows]
        state_width = max((len(x) for x in states), default=0)
        lines = []
        for item, state in zip(rows, states):
            elapsed = (item.ended if item.ended is not None else now) - item.started
            line = Text(("  " * item.depth + item.label).ljust(width) + " ")
            style = _DONE_STYLE.get(state, "green") if item.ended is not None else "cyan"
            line.append(state.ljust(state_width), style=style)
            line.append(f" {_clock(elapsed):>5}")
            if item.total:
                done = int(_BAR * min(item.completed, item.total) / item.total)
                line.append("  " + "━" * done, style="magenta" if done < _BAR else "green")
                if done < _BAR:
                    line.append("╺" + "━" * (_BAR - done - 1), style="bright_black")
            if item.unit or item.completed:
                detail = amount_text(item)
                rate = rate_text(item, elapsed)
                if rate:
                    detail += f"  {rate}"
                if item.total and item.completed and item.ended is None:
                    left = (item.total - item.completed) / (item.completed / max(elapsed, 1e-9))
                    detail += f"  ETA {_clock(left)}"
                line.append("  " + detail, style="dim")
            line.truncate(self.console.width, overflow="ellipsis")
            lines.append(line)
        frame = Text("\n").join(lines)
        frame.no_wrap = True
        return frame

    def _on_close(self) -> None:
        if self._live is not None:
            try:
                self._live.stop()
            except (OSError, ValueError):
                pass
            self._live = None


def _clock(seconds: float) -> str:
    """`0:07`, `12:45`: elapsed time and ETA in the live view."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _seconds_setting(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not '{raw}'")
    return value


def chosen_mode(progress: bool | None, quiet: bool = False) -> str:
    """The mode a command shows progress in: BUILDENV_PROGRESS (default auto), which
    `--progress`/`--no-progress` override; `--quiet` turns it off unless `--progress` is given.
    ValueError (its message for BE004) when BUILDENV_PROGRESS is not a mode."""
    mode = os.environ.get("BUILDENV_PROGRESS", "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"BUILDENV_PROGRESS must be one of {', '.join(MODES)}, not '{mode}'")
    if progress is False or (quiet and progress is None):
        return "off"
    if progress and mode == "off":
        return "auto"
    return mode


def renderer(stream: IO[str] | None = None, mode: str = "auto",
             env: Mapping[str, str] | None = None) -> Renderer | None:
    """The renderer for `stream` (default stderr). `auto`: live on a terminal, lines elsewhere;
    TERM=dumb always gets lines; NO_COLOR drops colours. Timings come from
    BUILDENV_PROGRESS_AFTER and BUILDENV_PROGRESS_HEARTBEAT (seconds); ValueError if invalid."""
    env = os.environ if env is None else env
    stream = stream if stream is not None else sys.stderr
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not '{mode}'")
    after = _seconds_setting(env, "BUILDENV_PROGRESS_AFTER", AFTER)
    heartbeat = _seconds_setting(env, "BUILDENV_PROGRESS_HEARTBEAT", HEARTBEAT)
    if mode == "off":
        return None
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError, OSError):
        terminal = False
    dumb = env.get("TERM", "").lower() in ("dumb", "unknown")
    if mode == "auto":
        mode = "live" if terminal else "plain"
    if mode == "plain" or dumb:
        return Lines(stream, after, max(heartbeat, TICK))
    return Live(stream, after, no_color=bool(env.get("NO_COLOR")), force_terminal=not terminal)
