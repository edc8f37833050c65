"""A small reader for protobuf text format (what TFDV writes schemas in), without descriptors.

TFDV's `schema.pbtxt` is a `tensorflow.metadata.v0.Schema` in text format. Reading it with
protobuf's `text_format` needs the generated `schema_pb2` module (tensorflow-metadata, and
through it TensorFlow's dependency tree); this reader needs nothing. Without the descriptor it
cannot know field types, so it returns what the text says: every field as (name, value, line),
where a value is a nested `Message`, a string, an int, a float, a bool, or an enum name
(`Enum`). Supported syntax: `name: value`, `name { ... }` / `name: { ... }` / `name < ... >`,
`name: [v1, v2]` lists, adjacent string literals (concatenated), C-style escapes, `#`
comments, optional `,`/`;` separators, `[extension.name]` and `[type.url/Any]` field names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Enum", "Field", "Message", "TextProtoError", "parse"]


class TextProtoError(ValueError):
    """Malformed text: the message says what was expected, `line`/`col` where."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.line, self.col = line, col


class Enum(str):
    """An identifier value: an enum constant such as `BYTES` or `DEPRECATED`."""


@dataclass
class Field:
    name: str
    value: Any  # Message | str | int | float | bool | Enum
    line: int


@dataclass
class Message:
    fields: list[Field] = field(default_factory=list)
    line: int = 1

    def all(self, name: str) -> list[Any]:
        return [f.value for f in self.fields if f.name == name]

    def get(self, name: str, default: Any = None) -> Any:
        """The last value of `name` (text format: a repeated singular field keeps the last)."""
        values = self.all(name)
        return values[-1] if values else default

    def line_of(self, name: str) -> int:
        for f in reversed(self.fields):
            if f.name == name:
                return f.line
        return self.line

    def names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.fields))


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
  | (?P<signed_word>-(?:inf|infinity|nan)\b)
  | (?P<ident>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)
  | (?P<punct>[:{}<>\[\],;/])
""", re.VERBOSE | re.IGNORECASE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


@dataclass
class _Token:
    kind: str
    text: str
    line: int
    col: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TextProtoError(f"unexpected character {text[pos]!r}", line, pos - line_start + 1)
        kind = m.lastgroup or ""
        if kind == "newline":
            line, line_start = line + 1, m.end()
        elif kind != "space":
            out.append(_Token(kind, m.group(), line, pos - line_start + 1))
        pos = m.end()
    out.append(_Token("end", "", line, pos - line_start + 1))
    return out


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    out: list[str] = []
    raw = bytearray()
    i = 0

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    while i < len(body):
        ch = body[i]
        if ch != "\\":
            flush()
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            flush()
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()  # type: ignore[union-attr]
            raw.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if digits is None:
                raise TextProtoError("bad \\x escape", token.line, token.col)
            raw.append(int(digits.group(), 16))
            i += 2 + len(digits.group())
        else:
            raise TextProtoError(f"unknown escape \\{nxt}", token.line, token.col)
    flush()
    return "".join(out)


def _number(text: str) -> int | float:
    lower = text.lower()
    if lower.lstrip("+-") in ("inf", "infinity"):
        return float("-inf") if lower.startswith("-") else float("inf")
    if lower.lstrip("+-") == "nan":
        return float("nan")
    if lower.lstrip("+-").startswith("0x"):
        return int(lower, 16)
    if lower.endswith("f") and not lower.lstrip("+-").startswith("0x"):
        return float(lower[:-1])
    if any(c in lower for c in ".e"):
        return float(lower)
    return int(lower, 10)


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, expected: str) -> TextProtoError:
        token = self.peek()
        found = "end of file" if token.kind == "end" else repr(token.text)
        return TextProtoError(f"expected {expected}, found {found}", token.line, token.col)

    def message(self, closer: str | None) -> Message:
        start = self.peek()
        msg = Message(line=start.line)
        while True:
            token = self.peek()
            if closer is None and token.kind == "end":
                return msg
            if closer is not None and token.text == closer:
                self.take()
                return msg
            name = self.field_name(closer)
            colon = self.peek().text == ":"
            if colon:
                self.take()
            nxt = self.peek()
            if nxt.text in ("{", "<"):
                self.take()
                value: Any = self.message("}" if nxt.text == "{" else ">")
                msg.fields.append(Field(name.text, value, name.line))
            elif not colon:
                raise self.fail(f"':' or '{{' after field '{name.text}'")
            elif nxt.text == "[":
                self.take()
                self.list_items(name.text, msg)
            else:
                msg.fields.append(Field(name.text, self.scalar(), name.line))
            if self.peek().text in (",", ";"):
                self.take()

    def field_name(self, closer: str | None) -> _Token:
        token = self.peek()
        if token.text == "[":  # [extension.name] or [type.url/Any.Type]
            self.take()
            parts = []
            while self.peek().kind == "ident" or self.peek().text == "/":
                parts.append(self.take().text)
            if self.peek().text != "]" or not parts:
                raise self.fail("an extension name and ']'")
            self.take()
            return _Token("ident", "[" + "".join(parts) + "]", token.line, token.col)
        if token.kind == "ident":
            return self.take()
        raise self.fail("a field name" + (f" or '{closer}'" if closer else ""))

    def list_items(self, name: str, msg: Message) -> None:
        """`name: [a, b, {...}]` after its '[': one field per item, up to and past the ']'."""
        while self.peek().text != "]":
            item = self.peek()
            if item.text in ("{", "<"):
                self.take()
                msg.fields.append(Field(name, self.message("}" if item.text == "{" else ">"),
                                        item.line))
            else:
                msg.fields.append(Field(name, self.scalar(), item.line))
            if self.peek().text == ",":
                self.take()
            elif self.peek().text != "]":
                raise self.fail("',' or ']'")
        self.take()

    def scalar(self) -> Any:
        token = self.peek()
        if token.kind == "string":
            parts = []
            while self.peek().kind == "string":
                parts.append(_unquote(self.take()))
            return "".join(parts)
        if token.kind in ("number", "signed_word"):
            self.take()
            try:
                return _number(token.text)
            except ValueError:
                raise TextProtoError(f"bad number {token.text!r}", token.line,
                                     token.col) from None
        if token.kind == "ident":
            self.take()
            lower = token.text.lower()
            if token.text in ("true", "True", "t"):
                return True
            if token.text in ("false", "False", "f"):
                return False
            if lower in ("inf", "infinity", "nan"):
                return _number(lower)
            return Enum(token.text)
        raise self.fail("a value")


def parse(text: str) -> Message:
    """The top-level message of a text-format protobuf; TextProtoError on malformed text."""
    return _Parser(text).message(None)
