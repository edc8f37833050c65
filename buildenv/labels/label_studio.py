"""Label Studio JSON exports: validated with pydantic, parsed as a stream.

An export is a JSON array of tasks; each task has `data` (the example, holding the key) and
`annotations`, each with `completed_by` (the annotator: an id, or an object with `id`/`email`),
`created_at`, `was_cancelled` and `result`, a list of control outputs; the label is the one
entry whose `from_name` is the label set's `field`, of type `choices`, choosing one class.

The array is read element by element (`json.JSONDecoder.raw_decode` over a sliding text
buffer), tasks are validated with pydantic in batches and flattened into columns at once, so
memory holds one batch of task objects whatever the export's size. Label Studio's own SDK is
not used: it does not install against this project's numpy pin, and the format is small.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from buildenv.data.gate.formats import parse_timestamps
from buildenv.labels.annotations import Annotations, ExportError

__all__ = ["Annotation", "Task", "read_label_studio", "tasks_adapter"]

BATCH = 4096
MAX_ELEMENT = 64 << 20  # characters one task may take before the export is called broken


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Annotator(_Loose):
    """`completed_by` as an object (some export versions)."""

    id: int | str | None = None
    email: str | None = None


class ResultItem(_Loose):
    """One control's output in an annotation."""

    from_name: str
    type: str | None = None
    value: dict[str, Any] = {}


class Annotation(_Loose):
    id: int | str | None = None
    completed_by: int | str | Annotator | None = None
    created_at: str | None = None
    was_cancelled: bool = False
    result: list[ResultItem] = []


class Task(_Loose):
    id: int | str | None = None
    data: dict[str, Any]
    annotations: list[Annotation] = []


_TASKS = TypeAdapter(list[Task])


def tasks_adapter() -> TypeAdapter[list[Task]]:
    """The validator of a whole export (`bench/` compares the import with it)."""
    return _TASKS


# --- the stream ---------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")


class _Text:
    """A sliding window over the decoded export that knows the line number of its position."""

    def __init__(self, chunks: Iterable[bytes], display: str):
        self._chunks = iter(chunks)
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.display = display
        self.buf = ""
        self.pos = 0
        self.line = 1  # line number of buf[pos]
        self.eof = False

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        chunk = next(self._chunks, None)
        try:
            if chunk is None:
                self.eof = True
                self.buf += self._decoder.decode(b"", final=True)
                return False
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError:
            raise ExportError("BE854", f"{self.display}: not UTF-8 text near line {self.line}: "
                              "a Label Studio export is a JSON document") from None
        if self.pos > (1 << 20):  # drop what was consumed (the line count already covers it)
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def skip_ws(self) -> str | None:
        """The next non-blank character (not consumed), None at the end."""
        while True:
            end = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            self.advance(end)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def line_of(self, index: int) -> int:
        return self.line + self.buf.count("\n", self.pos, index)

    def fail(self, message: str, at: int | None = None) -> ExportError:
        line = self.line if at is None else self.line_of(at)
        return ExportError("BE854", f"{self.display}:{line}: {message}")


def iter_elements(chunks: Iterable[bytes], display: str) -> Iterator[tuple[Any, int]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    text = _Text(chunks, display)
    decoder = json.JSONDecoder()
    first = text.skip_ws()
    if first != "[":
        what = "an empty file" if first is None else (
            "a JSON object" if first == "{" else "not a JSON array")
        raise text.fail(f"a Label Studio export is a JSON array of tasks; this is {what}")
    text.advance(text.pos + 1)
    expect_value = True
    after_comma = False
    while True:
        ch = text.skip_ws()
        if ch is None:
            raise text.fail("the JSON array is not closed (the file ends early)")
        if ch == "]" and not after_comma:
            text.advance(text.pos + 1)
            break
        if not expect_value:
            if ch != ",":
                raise text.fail(f"expected ',' or ']' between tasks, found {ch!r}")
            text.advance(text.pos + 1)
            expect_value, after_comma = True, True
            continue
        while True:
            start = text.pos  # `more()` may slide the window
            try:
                value, end = decoder.raw_decode(text.buf, start)
            except json.JSONDecodeError as exc:
                # the element may go on in the next chunk; past MAX_ELEMENT it is broken
                if len(text.buf) - start < MAX_ELEMENT and text.more():
                    continue
                if exc.pos >= len(text.buf.rstrip()):
                    raise text.fail("the export ends inside a task (is it truncated?)",
                                    exc.pos) from None
                raise text.fail(f"invalid JSON: {exc.msg}", exc.pos) from None
            if end == len(text.buf) and text.more():  # a literal may go on in the next chunk
                continue
            break
        line = text.line
        text.advance(end)
        yield value, line
        expect_value, after_comma = False, False
    if text.skip_ws() is not None:
        raise text.fail("unexpected content after the JSON array")


# --- flattening ---------------------------------------------------------------------------------

def _key(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _annotator(value: Any) -> str | None:
    if isinstance(value, Annotator):
        value = value.id if value.id is not None else value.email
    if value is None or isinstance(value, bool):
        return None
    return str(value)


class _Columns:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.labels: list[str] = []
        self.annotators: list[str] = []
        self.created: list[str | None] = []
        self.lines: list[int] = []
        self.tasks = self.cancelled = self.empty = 0
        self.from_names: set[str] = set()
        self.matched = 0


def _flatten(tasks: list[Task], lines: list[int], key: str, field: str, out: _Columns,
             display: str) -> None:
    keys, labels, annotators = out.keys, out.labels, out.annotators
    created, where = out.created, out.lines
    for task, line in zip(tasks, lines):
        out.tasks += 1
        if key not in task.data:
            raise ExportError("BE854", f"{display}:{line}: task {task.id} has no `data.{key}`, "
                              "the key that names its example")
        text = _key(task.data[key])
        if text is None:
            raise ExportError("BE854", f"{display}:{line}: task {task.id}: `data.{key}` is a "
                              f"{type(task.data[key]).__name__}, not an integer or string key")
        for ann in task.annotations:
            if ann.was_cancelled:
                out.cancelled += 1
                continue
            chosen = None
            for item in ann.result:
                if item.from_name != field:
                    out.from_names.add(item.from_name)
                    continue
                out.matched += 1
                choices = item.value.get("choices")
                if not isinstance(choices, list) or len(choices) != 1 or \
                        not isinstance(choices[0], str) or chosen is not None:
                    n = len(choices) if isinstance(choices, list) else 0
                    raise ExportError("BE854", f"{display}:{line}: task {task.id}, annotation "
                                      f"{ann.id}: '{field}' holds {n if chosen is None else 2} "
                                      "choices; a label set holds exactly one class per "
                                      "annotation")
                chosen = choices[0]
            if chosen is None:
                out.empty += 1
                continue
            who = _annotator(ann.completed_by)
            if who is None:
                raise ExportError("BE854", f"{display}:{line}: task {task.id}, annotation "
                                  f"{ann.id} has no `completed_by`: every annotation needs "
                                  "its annotator")
            keys.append(text)
            labels.append(chosen)
            annotators.append(who)
            created.append(ann.created_at)
            where.append(line)


def read_label_studio(chunks: Iterable[bytes], *, key: str, field: str,
                      ui_version: str | None, display: str) -> Annotations:
    """Annotations of a Label Studio export (bytes in order); ExportError when it is not one."""
    out = _Columns()
    batch: list[Any] = []
    batch_lines: list[int] = []

    def flush() -> None:
        try:
            tasks = _TASKS.validate_python(batch)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = list(err["loc"])
            first = loc[0] if loc else None
            index = first if isinstance(first, int) else 0
            if isinstance(first, int):
                loc.pop(0)
            path = ".".join(str(p) for p in loc) or "(the task)"
            raise ExportError("BE854", f"{display}:{batch_lines[index]}: not a Label Studio "
                              f"task: {path}: {err['msg']}") from None
        _flatten(tasks, batch_lines, key, field, out, display)
        batch.clear()
        batch_lines.clear()

    for value, line in iter_elements(chunks, display):
        batch.append(value)
        batch_lines.append(line)
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    if out.matched == 0 and (out.keys or out.empty):
        seen = ", ".join(sorted(out.from_names)[:8]) or "none"
        raise ExportError("BE867", f"{display}: no annotation has a result from '{field}' "
                          f"(from_name seen: {seen})")
    created = _timestamps(out.created, out.lines, display)
    n = len(out.keys)
    return Annotations(
        keys=pa.array(out.keys, pa.string()), labels=pa.array(out.labels, pa.string()),
        annotators=pa.array(out.annotators, pa.string()),
        ui_versions=pa.nulls(n, pa.string()) if ui_version is None
        else pa.array([ui_version] * n, pa.string()),
        created_at=created, lines=np.asarray(out.lines, dtype=np.int64), tasks=out.tasks,
        cancelled=out.cancelled, empty=out.empty, unit="line")


def _timestamps(values: list[str | None], lines: list[int], display: str) -> pa.Array:
    """ISO 8601 `created_at` text -> UTC timestamps (no offset means UTC)."""
    text = pa.array(values, pa.string())
    try:
        batch = parse_timestamps(pa.RecordBatch.from_arrays([text], names=["t"]), ["t"])
        return batch.column(0)
    except (pa.ArrowException, ValueError):
        for i, value in enumerate(values):
            if value is None:
                continue
            try:
                parse_timestamps(pa.RecordBatch.from_arrays([pa.array([value])], names=["t"]),
                                 ["t"])
            except (pa.ArrowException, ValueError):
                raise ExportError("BE854", f"{display}:{lines[i]}: `created_at` is not an ISO "
                                  "8601 time") from None
        raise
